//! Access tokens: JSON Web Tokens signed with HMAC-SHA256 (as Nacos's `JwtTokenManager`),
//! carrying the user name (`sub`) and the expiry in Unix seconds (`exp`).
//!
//! Every node signs and checks with the same secret (`--auth-token-secret`), so a token
//! issued by one node is valid on all of them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The fixed JOSE header of every token: `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Shortest accepted secret, in bytes (Nacos requires 32 bytes too).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token was refused; `message` is what Nacos answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token was given.
    Missing,
    /// Not a token signed with this cluster's secret.
    Invalid,
    /// Signed correctly but past its expiry.
    Expired,
}

impl TokenError {
    /// Nacos's message for this refusal.
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Missing => "user not found!",
            TokenError::Invalid => "token invalid!",
            TokenError::Expired => "token expired!",
        }
    }
}

/// Signs and checks tokens with one secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl TokenSigner {
    /// A signer with `secret`, which must be at least [`MIN_SECRET_BYTES`] long.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "invalid auth token secret: {} bytes, at least {MIN_SECRET_BYTES} are required",
                secret.len()
            ));
        }
        Ok(Self {
            secret: secret.to_vec(),
        })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; `new` checked the length anyway.
        HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!())
    }

    /// A token for `user` that expires at `exp` (Unix seconds).
    pub fn issue(&self, user: &str, exp: u64) -> String {
        let claims = serde_json::to_vec(&Claims {
            sub: user.to_string(),
            exp,
        })
        .unwrap_or_default();
        let signed = format!("{}.{}", B64.encode(HEADER), B64.encode(claims));
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{signed}.{}", B64.encode(sig))
    }

    /// The user of `token` if it is signed with this secret and not expired at `now`
    /// (Unix seconds). The signature is compared in constant time.
    pub fn check(&self, token: &str, now: u64) -> Result<String, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let (header, claims) = signed.split_once('.').ok_or(TokenError::Invalid)?;
        let header = B64.decode(header).map_err(|_| TokenError::Invalid)?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| TokenError::Invalid)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Invalid);
        }
        let claims = B64.decode(claims).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| TokenError::Invalid)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_is_valid_until_it_expires_and_only_with_its_secret() {
        let s = TokenSigner::new(SECRET).unwrap();
        let t = s.issue("alice", 1_000);
        assert_eq!(s.check(&t, 999).unwrap(), "alice");
        assert_eq!(s.check(&t, 1_000), Err(TokenError::Expired));
        let other = TokenSigner::new(b"another secret of thirty-two bytes!!").unwrap();
        assert_eq!(other.check(&t, 0), Err(TokenError::Invalid));
        // A changed claim breaks the signature.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(r#"{"sub":"admin","exp":1000}"#),
            parts[2]
        );
        assert_eq!(s.check(&forged, 0), Err(TokenError::Invalid));
        assert_eq!(s.check("", 0), Err(TokenError::Missing));
        assert_eq!(s.check("a.b", 0), Err(TokenError::Invalid));
        assert_eq!(s.check("not a token", 0), Err(TokenError::Invalid));
    }

    #[test]
    fn a_short_secret_is_refused() {
        let e = TokenSigner::new(b"short").unwrap_err();
        assert!(e.contains("at least 32"), "{e}");
    }
}
