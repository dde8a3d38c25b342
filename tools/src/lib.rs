//! shardctl: shardgate's operator CLI, as a library so tests drive the same code.
