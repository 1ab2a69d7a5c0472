//! Integration tests of distro-server, all in one test binary: real nodes on 127.0.0.1
//! port 0 (or OS-chosen ports under Nacos's convention), real sockets, real clients.

pub(crate) mod binary;
mod cluster;
mod faults;
mod fuzz;
mod fuzz_h2;
mod limits;
mod members_dns;
mod membership;
mod nacos;
mod tls;
