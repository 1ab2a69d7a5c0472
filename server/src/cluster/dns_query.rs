//! A small DNS client for `--members-dns-server`: the IPv4 addresses (A records) of one
//! name, asked of one given server over UDP, instead of the system's resolver.
//!
//! It exists so that a name can be served by a DNS server of one's choosing (a test's, a
//! sidecar's) without touching `/etc/hosts` or `/etc/resolv.conf`. One query carries an
//! EDNS(0) record offering 4,096-byte answers (a full member list fits); an answer cut
//! short (TC) is an error, as is one that names another query, an error code, or bytes
//! that do not parse. Each try waits [`TRY_TIMEOUT`]; [`TRIES`] tries in all.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::time::Duration;

/// How long one try waits for its answer.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(1);
/// Tries per resolution.
pub const TRIES: usize = 3;
/// The largest answer accepted (the EDNS(0) payload size offered).
const MAX_ANSWER: usize = 4096;

const TYPE_A: u16 = 1;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// A fresh query id (the low bits of the clock, stepped by a counter).
fn next_id() -> u16 {
    static COUNTER: AtomicU16 = AtomicU16::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos as u16) ^ COUNTER.fetch_add(0x9e37, Relaxed)
}

/// The query for the A records of `name` (a trailing dot allowed), with id `id`.
pub fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a DNS name (1-253 characters)"));
    }
    let mut q = Vec::with_capacity(name.len() + 30);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // a query, recursion desired
    q.extend_from_slice(&1u16.to_be_bytes()); // one question
    q.extend_from_slice(&0u16.to_be_bytes()); // no answer
    q.extend_from_slice(&0u16.to_be_bytes()); // no authority
    q.extend_from_slice(&1u16.to_be_bytes()); // one additional record: EDNS(0)
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{name:?} is not a DNS name (a label of {} characters)",
                label.len()
            ));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root name, type 41, class = payload size, TTL 0 (no flags), no data.
    q.push(0);
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&(MAX_ANSWER as u16).to_be_bytes());
    q.extend_from_slice(&0u32.to_be_bytes());
    q.extend_from_slice(&0u16.to_be_bytes());
    Ok(q)
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, String> {
    buf.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "the answer ends early".to_string())
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(buf: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *buf.get(at).ok_or("the answer ends inside a name")?;
        match len & 0xc0 {
            0 if len == 0 => return Ok(at + 1),
            0 => at += 1 + len as usize,
            0xc0 => return Ok(at + 2), // a pointer ends the name
            _ => return Err(format!("a name label starts with {len:#04x}")),
        }
    }
}

/// What an answer is: the addresses of its A records, or why it is not usable.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The answer to the query (possibly no address).
    Addresses(Vec<Ipv4Addr>),
    /// Not the answer to this query (another id, not a response): wait for the next.
    Other,
}

/// Parses `buf` as the answer to query `id`.
pub fn parse_answer(id: u16, buf: &[u8]) -> Result<Answer, String> {
    if buf.len() < 12 {
        return Err(format!("an answer of {} bytes (12 at least)", buf.len()));
    }
    let flags = u16_at(buf, 2)?;
    if u16_at(buf, 0)? != id || flags & 0x8000 == 0 {
        return Ok(Answer::Other);
    }
    if flags & 0x0200 != 0 {
        return Err("the answer was truncated (more than fits in one UDP answer)".into());
    }
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)".into()),
        2 => return Err("the server failed (SERVFAIL)".into()),
        5 => return Err("the server refused (REFUSED)".into()),
        code => return Err(format!("error code {code}")),
    }
    let questions = u16_at(buf, 4)?;
    let answers = u16_at(buf, 6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(buf, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(buf, at)?;
        let kind = u16_at(buf, at)?;
        let class = u16_at(buf, at + 2)?;
        let len = u16_at(buf, at + 8)? as usize;
        let data = buf
            .get(at + 10..at + 10 + len)
            .ok_or("the answer ends inside a record")?;
        if kind == TYPE_A && class == CLASS_IN {
            let octets: [u8; 4] = data
                .try_into()
                .map_err(|_| format!("an A record of {len} bytes"))?;
            found.push(Ipv4Addr::from(octets));
        }
        at += 10 + len;
    }
    Ok(Answer::Addresses(found))
}

fn local_for(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// The A records of `name`, asked of `server` (async; see the module documentation).
pub async fn query_a(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let socket = tokio::net::UdpSocket::bind(local_for(server))
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let mut last = String::from("no answer");
    let mut buf = vec![0u8; MAX_ANSWER];
    for _ in 0..TRIES {
        let id = next_id();
        let query = encode_query(id, name)?;
        socket
            .send_to(&query, server)
            .await
            .map_err(|e| format!("cannot send to {server}: {e}"))?;
        let deadline = tokio::time::Instant::now() + TRY_TIMEOUT;
        loop {
            let got = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
            match got {
                Err(_) => {
                    last = format!("no answer from {server} within {TRY_TIMEOUT:?}");
                    break;
                }
                Ok(Err(e)) => {
                    last = format!("{server}: {e}");
                    break;
                }
                Ok(Ok((n, from))) if from == server => match parse_answer(id, &buf[..n])? {
                    Answer::Addresses(a) => return Ok(a),
                    Answer::Other => {}
                },
                Ok(Ok(_)) => {} // not from the server
            }
        }
    }
    Err(last)
}

/// As [`query_a`], blocking the thread (for the node's start, before its runtime).
pub fn query_a_blocking(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let socket = std::net::UdpSocket::bind(local_for(server))
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket
        .set_read_timeout(Some(TRY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut last = String::from("no answer");
    let mut buf = vec![0u8; MAX_ANSWER];
    for _ in 0..TRIES {
        let id = next_id();
        let query = encode_query(id, name)?;
        socket
            .send_to(&query, server)
            .map_err(|e| format!("cannot send to {server}: {e}"))?;
        let deadline = std::time::Instant::now() + TRY_TIMEOUT;
        while std::time::Instant::now() < deadline {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == server => match parse_answer(id, &buf[..n])? {
                    Answer::Addresses(a) => return Ok(a),
                    Answer::Other => {}
                },
                Ok(_) => {}
                Err(e) => {
                    last = format!("no answer from {server} within {TRY_TIMEOUT:?} ({e})");
                    break;
                }
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query` with `ips` as A records, the name compressed as a pointer to
    /// the question.
    fn answer_to(query: &[u8], ips: &[[u8; 4]], flags: u16) -> Vec<u8> {
        let end = skip_name(query, 12).unwrap() + 4;
        let mut a = query[..2].to_vec();
        a.extend_from_slice(&flags.to_be_bytes());
        a.extend_from_slice(&[0, 1]);
        a.extend_from_slice(&(ips.len() as u16).to_be_bytes());
        a.extend_from_slice(&[0, 0, 0, 0]);
        a.extend_from_slice(&query[12..end]);
        for ip in ips {
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            a.extend_from_slice(ip);
        }
        a
    }

    #[test]
    fn a_query_names_its_labels_and_asks_for_a_records() {
        let q = encode_query(0x1234, "members.distro.test.").unwrap();
        assert_eq!(&q[..2], &[0x12, 0x34]);
        let name_end = skip_name(&q, 12).unwrap();
        assert_eq!(&q[12..name_end], b"\x07members\x06distro\x04test\x00");
        assert_eq!(u16_at(&q, name_end).unwrap(), TYPE_A);
        assert!(encode_query(1, "").unwrap_err().contains("not a DNS name"));
        assert!(encode_query(1, "a..b").unwrap_err().contains("label"));
        assert!(
            encode_query(1, &"x".repeat(64))
                .unwrap_err()
                .contains("label of 64")
        );
    }

    #[test]
    fn answers_give_their_addresses_or_a_reason() {
        let q = encode_query(7, "m.test").unwrap();
        let ok = answer_to(&q, &[[127, 0, 88, 1], [127, 0, 88, 2]], 0x8180);
        match parse_answer(7, &ok).unwrap() {
            Answer::Addresses(a) => assert_eq!(
                a,
                vec![Ipv4Addr::new(127, 0, 88, 1), Ipv4Addr::new(127, 0, 88, 2)]
            ),
            Answer::Other => panic!("the answer to 7"),
        }
        assert!(matches!(parse_answer(8, &ok).unwrap(), Answer::Other));
        let nx = answer_to(&q, &[], 0x8183);
        assert!(parse_answer(7, &nx).unwrap_err().contains("NXDOMAIN"));
        let tc = answer_to(&q, &[], 0x8380);
        assert!(parse_answer(7, &tc).unwrap_err().contains("truncated"));
        assert!(
            parse_answer(7, &ok[..ok.len() - 2])
                .unwrap_err()
                .contains("ends inside a record")
        );
        assert!(parse_answer(7, &ok[..5]).unwrap_err().contains("5 bytes"));
    }
}
