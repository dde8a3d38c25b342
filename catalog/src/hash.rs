//! The shard hash: a port of Postgres's own 64-bit hash functions, so a tenant's hash can be
//! recomputed in plain SQL (`hashint8extended`, `hashtextextended`, `uuid_hash_extended`)
//! and a layout checked with Postgres's `PARTITION BY HASH` arithmetic.
//!
//! **Fixed forever once data exists**: every placement depends on these exact bits. The
//! test vectors below were taken from Postgres 15; an end-to-end test compares against a
//! live server as well.

/// The seed Postgres uses for hash partitioning (`HASH_PARTITION_SEED`).
pub const PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// A tenant key's position in hash space: what Postgres computes for a one-column
/// `PARTITION BY HASH` key before taking the modulus.
pub fn partition_hash_i64(v: i64) -> u64 {
    hash_combine64(0, hashint8extended(v, PARTITION_SEED))
}

/// As [`partition_hash_i64`] for a text key (deterministic collation: the bytes are hashed).
pub fn partition_hash_bytes(v: &[u8]) -> u64 {
    hash_combine64(0, hash_bytes_extended(v, PARTITION_SEED))
}

/// Postgres's `hash_combine64`.
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(0x49a0_f4dd_15e5_a8e3)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// Postgres's `hashint8extended`: folds the high half into the low half (so equal int2,
/// int4 and int8 values hash alike) and hashes the result as a uint32.
pub fn hashint8extended(v: i64, seed: u64) -> u64 {
    let hi = (v >> 32) as u32;
    let lo = v as u32 ^ if v >= 0 { hi } else { !hi };
    hash_uint32_extended(lo, seed)
}

/// Postgres's `hash_uint32_extended`.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let init = 0x9e37_79b9u32
        .wrapping_add(std::mem::size_of::<u32>() as u32)
        .wrapping_add(3_923_095);
    let mut s = State {
        a: init,
        b: init,
        c: init,
    };
    s.seed(seed);
    s.a = s.a.wrapping_add(k);
    s.finish()
}

/// Postgres's `hash_bytes_extended` (Bob Jenkins' lookup3, little-endian word order).
pub fn hash_bytes_extended(k: &[u8], seed: u64) -> u64 {
    let init = 0x9e37_79b9u32
        .wrapping_add(k.len() as u32)
        .wrapping_add(3_923_095);
    let mut s = State {
        a: init,
        b: init,
        c: init,
    };
    s.seed(seed);
    let mut chunks = k.chunks_exact(12);
    for chunk in &mut chunks {
        s.a = s.a.wrapping_add(word(&chunk[0..4]));
        s.b = s.b.wrapping_add(word(&chunk[4..8]));
        s.c = s.c.wrapping_add(word(&chunk[8..12]));
        s.mix();
    }
    let tail = chunks.remainder();
    // The last 0..=11 bytes: a takes bytes 0-3, b 4-7, c 8-10 shifted up one byte (the
    // lowest byte of c is left for the length, which went into the initial state).
    for (i, &byte) in tail.iter().enumerate() {
        let byte = byte as u32;
        match i {
            0..=3 => s.a = s.a.wrapping_add(byte << (8 * i)),
            4..=7 => s.b = s.b.wrapping_add(byte << (8 * (i - 4))),
            _ => s.c = s.c.wrapping_add(byte << (8 * (i - 7))),
        }
    }
    s.finish()
}

fn word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

struct State {
    a: u32,
    b: u32,
    c: u32,
}

impl State {
    /// A non-zero seed is mixed in as if it were a 12-byte chunk of data.
    fn seed(&mut self, seed: u64) {
        if seed != 0 {
            self.a = self.a.wrapping_add((seed >> 32) as u32);
            self.b = self.b.wrapping_add(seed as u32);
            self.mix();
        }
    }

    fn mix(&mut self) {
        let State { a, b, c } = self;
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }

    fn finish(mut self) -> u64 {
        let State { a, b, c } = &mut self;
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(14));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(11));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(25));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(16));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(4));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(14));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(24));
        ((*b as u64) << 32) | *c as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `select v, hashint8extended(v, 0), hashint8extended(v, <PARTITION_SEED>)` on
    /// Postgres 15.
    const INT8: [(i64, i64, i64); 10] = [
        (0, 4154612158245552303, -4403592609991167795),
        (1, -3670598878359251130, 5968994663651403477),
        (-1, -1888257769727981238, -5017072347659237694),
        (42, 8010225493015854792, 7363975540656877951),
        (2147483647, -9109110466470504941, -6050265599104649060),
        (2147483648, 1977219185673256887, 4938542303000433043),
        (-2147483649, -9109110466470504941, -6050265599104649060),
        (i64::MAX, 1977219185673256887, 4938542303000433043),
        (i64::MIN, -9109110466470504941, -6050265599104649060),
        (123456789012, 5990271995538752477, 1825551100719034884),
    ];

    /// `select s, hashtextextended(s, 0), hashtextextended(s, <PARTITION_SEED>)`.
    const TEXT: [(&str, i64, i64); 6] = [
        ("", -6939563903564495251, -5700645584453517373),
        ("a", 3591986179850072241, -6705225459120232837),
        ("abc", -6747756470228489321, 3628778498291917250),
        ("tenant-42", 2308422559236963683, -6279421137222391794),
        (
            "hello world, this is longer than twelve bytes!",
            772962930452537007,
            4072681055496176877,
        ),
        ("Zürich", 6325084439750968862, -2422762918930088797),
    ];

    #[test]
    fn int8_matches_postgres() {
        for (v, unseeded, seeded) in INT8 {
            assert_eq!(hashint8extended(v, 0) as i64, unseeded, "{v}");
            assert_eq!(hashint8extended(v, PARTITION_SEED) as i64, seeded, "{v}");
        }
    }

    #[test]
    fn text_matches_postgres() {
        for (s, unseeded, seeded) in TEXT {
            assert_eq!(
                hash_bytes_extended(s.as_bytes(), 0) as i64,
                unseeded,
                "{s:?}"
            );
            assert_eq!(
                hash_bytes_extended(s.as_bytes(), PARTITION_SEED) as i64,
                seeded,
                "{s:?}"
            );
        }
    }

    #[test]
    fn uuid_matches_postgres() {
        // uuid_hash_extended(u, <PARTITION_SEED>) for the nil uuid and a random one.
        let nil = [0u8; 16];
        assert_eq!(
            hash_bytes_extended(&nil, PARTITION_SEED) as i64,
            -5281082146396728638
        );
        let u = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        assert_eq!(
            hash_bytes_extended(&u, PARTITION_SEED) as i64,
            424513190990560493
        );
    }

    #[test]
    fn partition_hash_picks_the_partition_postgres_picks() {
        // A table PARTITION BY HASH (k bigint) with modulus 7 put these rows in these
        // remainders on Postgres 15.
        for (k, remainder) in [
            (-1, 0),
            (0, 4),
            (1, 5),
            (42, 0),
            (1000, 5),
            (123456789012, 2),
        ] {
            assert_eq!(partition_hash_i64(k) % 7, remainder, "{k}");
        }
    }

    #[test]
    fn partition_hash_is_postgres_combine_of_the_seeded_hash() {
        let h = hashint8extended(42, PARTITION_SEED);
        assert_eq!(
            partition_hash_i64(42),
            h.wrapping_add(0x49a0_f4dd_15e5_a8e3)
        );
    }
}
