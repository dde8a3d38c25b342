//! Test harness: real Postgres clusters on free loopback ports and an in-process proxy.
