//! The header fields of a request as the HPACK decoder hands them over, checked as
//! RFC 9113 §8.2-8.3 asks (lowercase names, pseudo-headers first, once each and only the
//! request ones, no connection-specific fields, `te` only `trailers`), and kept without a
//! header map: the pseudo-headers in buffers of their own, the other fields (needed only
//! by the streams handed to tonic) in one arena, and not at all for the Nacos unary
//! method, whose answer reads nothing but the `:path`.

use crate::sdk_port::connection::NACOS_UNARY;

/// The fields of one request header block (reused from block to block).
#[derive(Default)]
pub(crate) struct Fields {
    pub(crate) path: Vec<u8>,
    method: Vec<u8>,
    scheme: Vec<u8>,
    authority: Vec<u8>,
    /// The names and values of the regular fields, end to end.
    arena: Vec<u8>,
    /// Per regular field: where its name ends and its value ends in `arena`.
    list: Vec<(usize, usize)>,
    /// Pseudo-headers seen (bit per kind).
    seen: u8,
    regular: bool,
    malformed: Option<&'static str>,
}

const PATH: u8 = 1;
const METHOD: u8 = 2;
const SCHEME: u8 = 4;
const AUTHORITY: u8 = 8;

impl Fields {
    /// Forgets the previous block.
    pub(crate) fn clear(&mut self) {
        self.path.clear();
        self.method.clear();
        self.scheme.clear();
        self.authority.clear();
        self.arena.clear();
        self.list.clear();
        self.seen = 0;
        self.regular = false;
        self.malformed = None;
    }

    /// One decoded field.
    pub(crate) fn add(&mut self, name: &[u8], value: &[u8]) {
        if self.malformed.is_some() {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular {
                return self.malformed = Some("a pseudo-header after a regular field");
            }
            let (bit, slot) = match pseudo {
                b"path" => (PATH, &mut self.path),
                b"method" => (METHOD, &mut self.method),
                b"scheme" => (SCHEME, &mut self.scheme),
                b"authority" => (AUTHORITY, &mut self.authority),
                _ => return self.malformed = Some("an unknown or response pseudo-header"),
            };
            if self.seen & bit != 0 {
                return self.malformed = Some("a pseudo-header twice");
            }
            self.seen |= bit;
            slot.extend_from_slice(value);
            return;
        }
        self.regular = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.malformed = Some("an uppercase field name");
        }
        if connection_specific(name) {
            return self.malformed = Some("a connection-specific field");
        }
        match name {
            b"te" if value != b"trailers" => {
                return self.malformed = Some("te other than trailers");
            }
            _ => {}
        }
        if self.path != NACOS_UNARY {
            self.arena.extend_from_slice(name);
            let name_end = self.arena.len();
            self.arena.extend_from_slice(value);
            self.list.push((name_end, self.arena.len()));
        }
    }

    /// Why the block is not a valid request, if it is not.
    pub(crate) fn malformed(&self) -> Option<&'static str> {
        if self.malformed.is_some() {
            return self.malformed;
        }
        if self.seen & (PATH | METHOD | SCHEME) != PATH | METHOD | SCHEME {
            return Some("a request without :method, :scheme or :path");
        }
        if self.path.is_empty() {
            return Some("an empty :path");
        }
        None
    }

    /// The request head for a tonic service.
    pub(crate) fn request(&self) -> Result<http::Request<()>, &'static str> {
        const BAD: &str = "a field tonic cannot take";
        let mut uri = http::Uri::builder();
        if !self.authority.is_empty() {
            uri = uri
                .scheme(self.scheme.as_slice())
                .authority(self.authority.as_slice());
        }
        let uri = uri
            .path_and_query(self.path.as_slice())
            .build()
            .map_err(|_| "an invalid :path")?;
        let mut request = http::Request::builder()
            .method(http::Method::from_bytes(&self.method).map_err(|_| "an invalid :method")?)
            .uri(uri)
            .version(http::Version::HTTP_2)
            .body(())
            .map_err(|_| BAD)?;
        let headers = request.headers_mut();
        let mut start = 0;
        for &(name_end, end) in &self.list {
            let name =
                http::HeaderName::from_bytes(&self.arena[start..name_end]).map_err(|_| BAD)?;
            let value =
                http::HeaderValue::from_bytes(&self.arena[name_end..end]).map_err(|_| BAD)?;
            headers.append(name, value);
            start = end;
        }
        Ok(request)
    }
}

/// Whether `name` is one of the connection-specific fields HTTP/2 forbids (RFC 9113
/// §8.2.2): refused from a client, left out of what we send.
pub(super) fn connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Fields {
        let mut f = Fields::default();
        for (n, v) in list {
            f.add(n.as_bytes(), v.as_bytes());
        }
        f
    }

    const HEAD: [(&str, &str); 3] = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/distro.v1.Registry/Query"),
    ];

    #[test]
    fn a_grpc_request_becomes_a_request_head() {
        let mut list = HEAD.to_vec();
        list.extend([("content-type", "application/grpc"), ("te", "trailers")]);
        let f = fields(&list);
        assert_eq!(f.malformed(), None);
        let r = f.request().unwrap();
        assert_eq!(r.uri().path(), "/distro.v1.Registry/Query");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers().len(), 2);
    }

    #[test]
    fn malformed_blocks_are_named() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[(":path", "/a")], "without"),
            (&[("a", "b"), (":path", "/a")], "after"),
            (&[(":status", "200")], "unknown"),
            (&[(":path", "/a"), (":path", "/b")], "twice"),
            (&[(":path", "/a"), ("Upper", "x")], "uppercase"),
            (
                &[(":path", "/a"), ("connection", "close")],
                "connection-specific",
            ),
        ];
        for (list, why) in cases {
            let f = fields(list);
            let got = f.malformed().unwrap_or("accepted");
            assert!(got.contains(why), "{list:?}: {got}");
        }
        let mut list = HEAD.to_vec();
        list.push(("te", "gzip"));
        assert!(fields(&list).malformed().is_some());
    }
}
