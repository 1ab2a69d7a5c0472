//! distro-server: a Distro cluster node (under construction; see issue 3).
