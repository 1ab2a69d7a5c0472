//! Nacos-compatible authentication and authorization, off unless `--auth-users` is given.
//!
//! A client logs in over HTTP (`POST /nacos/v1/auth/login` or `/nacos/v1/auth/users/login`
//! with `username` and `password`) and gets an access token ([`auth::token`], signed with
//! the secret every node shares, so it is valid on every node). It then sends the token
//! with each request: the `accessToken` parameter or header on HTTP, the `accessToken`
//! request header of a Nacos gRPC payload, the `accesstoken` metadata on the native API.
//! [`Auth::authorize`] checks it and the user's role permissions ([`auth::users`]) on the
//! service `namespace:group:service` the request reads or writes. Every refusal is
//! Nacos's: status 403 and the reason (`user not found!`, `token invalid!`,
//! `token expired!`, `authorization failed!`).
//!
//! [`auth::token`]: token
//! [`auth::users`]: users

pub mod token;
pub mod users;

pub use token::{TokenError, TokenSigner};
pub use users::{Action, Users};

use std::time::Duration;

/// Nacos's default token lifetime (`nacos.core.auth.plugin.nacos.token.expire.seconds`).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(18_000);
/// The name of the token parameter and header, as the SDKs send it.
pub const TOKEN_PARAM: &str = "accessToken";

/// A refused request: Nacos answers it with 403 and this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    /// Nacos's message, then the reason.
    pub message: String,
}

impl AuthError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A successful login, as Nacos answers it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    /// The token to send with every request.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub token_ttl: u64,
    /// Whether the user holds `ROLE_ADMIN`.
    pub global_admin: bool,
    /// The user.
    pub username: String,
}

/// The users, their permissions and the token secret of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    users: Users,
    signer: TokenSigner,
    ttl: Duration,
}

impl Auth {
    /// Auth with `users`, tokens signed with `secret` and living `ttl`.
    pub fn new(users: Users, secret: &[u8], ttl: Duration) -> Result<Self, String> {
        if ttl.as_secs() == 0 {
            return Err("invalid auth token ttl: must be at least one second".into());
        }
        Ok(Self {
            users,
            signer: TokenSigner::new(secret)?,
            ttl,
        })
    }

    /// Auth from the users file at `path` and `secret`.
    pub fn from_file(path: &std::path::Path, secret: &[u8], ttl: Duration) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the users file {}: {e}", path.display()))?;
        let users = Users::parse(&text)
            .map_err(|e| anyhow::anyhow!("invalid users file {}: {e}", path.display()))?;
        Self::new(users, secret, ttl).map_err(anyhow::Error::msg)
    }

    /// Logs `user` in with `password` at `now_ms`; slow on purpose (bcrypt), so callers on
    /// an async runtime run it on a blocking thread.
    pub fn login(&self, user: &str, password: &str, now_ms: u64) -> Result<Login, AuthError> {
        if !self.users.verify_password(user, password) {
            return Err(AuthError::new("unknown user!"));
        }
        let exp = now_ms / 1000 + self.ttl.as_secs();
        Ok(Login {
            access_token: self.signer.issue(user, exp),
            token_ttl: self.ttl.as_secs(),
            global_admin: self.users.is_global_admin(user),
            username: user.to_string(),
        })
    }

    /// The user of `token` at `now_ms`, if the token is valid, unexpired and its user
    /// exists: the check that needs no resource, made before a request is decoded.
    pub fn authenticate(&self, token: Option<&str>, now_ms: u64) -> Result<String, AuthError> {
        let user = self
            .signer
            .check(token.unwrap_or_default(), now_ms / 1000)
            .map_err(|e| AuthError::new(e.message()))?;
        if !self.users.exists(&user) {
            return Err(AuthError::new("user not found!"));
        }
        Ok(user)
    }

    /// The user of `token` at `now_ms`, if it may do `action` on the service `resource`
    /// (`namespace`, `group`, `service`; empty parts are Nacos's defaults `public` and
    /// `DEFAULT_GROUP`).
    pub fn authorize(
        &self,
        token: Option<&str>,
        resource: [&str; 3],
        action: Action,
        now_ms: u64,
    ) -> Result<String, AuthError> {
        let user = self.authenticate(token, now_ms)?;
        let [ns, group, service] = resource;
        let ns = if ns.is_empty() {
            distro_core::model::DEFAULT_NAMESPACE
        } else {
            ns
        };
        let group = if group.is_empty() {
            distro_core::model::DEFAULT_GROUP
        } else {
            group
        };
        if self.users.allows(&user, [ns, group, service], action) {
            Ok(user)
        } else {
            Err(AuthError::new(format!(
                "authorization failed! user {user:?} has no {} permission on {ns}:{group}:{service}",
                match action {
                    Action::Read => "read",
                    Action::Write => "write",
                }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_then_authorize_as_nacos_does() {
        let h = |p: &str| bcrypt::hash_with_salt(p, 4, [1; 16]).unwrap().to_string();
        let users = Users::parse(&format!(
            "user ro {} reader\nrole reader public:*:* r\n",
            h("pw")
        ))
        .unwrap();
        let auth = Auth::new(users, &[9; 32], Duration::from_secs(10)).unwrap();
        assert_eq!(
            auth.login("ro", "bad", 0).unwrap_err().message,
            "unknown user!"
        );
        let l = auth.login("ro", "pw", 1_000).unwrap();
        assert_eq!((l.token_ttl, l.global_admin), (10, false));
        let t = Some(l.access_token.as_str());
        assert_eq!(
            auth.authorize(t, ["", "", "svc"], Action::Read, 2_000),
            Ok("ro".to_string())
        );
        let e = auth
            .authorize(t, ["", "", "svc"], Action::Write, 2_000)
            .unwrap_err();
        assert!(e.message.starts_with("authorization failed!"), "{e}");
        let e = auth
            .authorize(t, ["", "", "svc"], Action::Read, 11_000)
            .unwrap_err();
        assert_eq!(e.message, "token expired!");
        let e = auth
            .authorize(None, ["", "", "svc"], Action::Read, 0)
            .unwrap_err();
        assert_eq!(e.message, "user not found!");
        let e = auth
            .authorize(Some("x.y.z"), ["", "", "svc"], Action::Read, 0)
            .unwrap_err();
        assert_eq!(e.message, "token invalid!");
    }
}
