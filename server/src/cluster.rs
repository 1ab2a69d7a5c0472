//! The cluster port: everything a node exchanges with its peers.
//!
//! ```text
//!  Node::tick ─▶ driver ─▶ peer_client ──distro.v1.Peer──▶ peer ─▶ Node::handle_request
//!                  ▲          (sync_codec, wire)             │
//!                  └──────── Node::handle_response ◀─────────┘
//!  api (http, native) ─▶ forward ─▶ owned here: Node::register / deregister / beat
//!                                └▶ owned elsewhere: peer_client::forward ─▶ peer ─▶ forward
//! ```
//!
//! [`driver`] runs the core's timers and carries out its commands; [`peer_client`] makes
//! the outgoing peer calls and [`peer`] serves them; [`sync_codec`] encodes and decodes
//! the bulk messages (sync batches, snapshot chunks) straight from and into core records,
//! [`wire`] converts every other peer message; [`forward`] routes client writes to their
//! owner; [`members_watch`] follows a members file or DNS name and changes the member
//! list while the node runs ([`dns_query`] asks a given DNS server, for
//! `--members-dns-server`).

pub mod compact;
pub mod dns_query;
pub mod driver;
pub mod forward;
pub mod members_watch;
pub mod peer;
pub mod peer_client;
pub mod sync_codec;
pub mod wire;
