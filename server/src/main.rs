//! The `distro-server` binary (command line arrives with issue 3).

fn main() {}
