//! The users file (`--auth-users FILE`): users with bcrypt password hashes and roles, and
//! the permissions each role holds, as Nacos's RBAC.
//!
//! One entry a line; `#` starts a comment; fields are separated by spaces:
//!
//! ```text
//! user  <name> <bcrypt hash> <role>[,<role>...]
//! role  <role> <namespace>:<group>:<service> <r|w|rw>
//! ```
//!
//! A role may have many `role` lines. The role `ROLE_ADMIN` (Nacos's global admin) may do
//! everything. In a resource, `*` matches any run of characters within its part, so
//! `public:*:*` is every service of namespace `public` and `*:DEFAULT_GROUP:order*` every
//! service whose name starts with `order` in group `DEFAULT_GROUP` of any namespace. The
//! hashes are bcrypt's (`$2a$`, `$2b$`, `$2y$`), as Nacos stores them; make one with
//! `distro-server --hash-password` (the password on stdin), or take Nacos's.

use std::collections::HashMap;

/// Nacos's global admin role.
pub const GLOBAL_ADMIN_ROLE: &str = "ROLE_ADMIN";

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Query, list, subscribe.
    Read,
    /// Register, deregister, heartbeat.
    Write,
}

impl Action {
    /// Nacos's letter for the action.
    pub fn letter(self) -> &'static str {
        match self {
            Action::Read => "r",
            Action::Write => "w",
        }
    }
}

/// One permission: a resource pattern and the actions it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Permission {
    /// `namespace`, `group`, `service` patterns.
    parts: [String; 3],
    read: bool,
    write: bool,
}

/// One user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    hash: String,
    roles: Vec<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash: configurations get logged.
        f.debug_struct("User").field("roles", &self.roles).finish()
    }
}

/// Users and role permissions, as read from the users file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: HashMap<String, User>,
    roles: HashMap<String, Vec<Permission>>,
}

impl Users {
    /// Parses the users file's `text`; errors name the line and the reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Users::default();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["user", name, hash, roles] => {
                    if !hash.starts_with("$2") {
                        return Err(format!(
                            "line {n}: invalid password hash of user {name:?}: not a bcrypt \
                             hash ($2a$, $2b$ or $2y$)"
                        ));
                    }
                    hash.parse::<bcrypt::HashParts>().map_err(|e| {
                        format!("line {n}: invalid password hash of user {name:?}: {e}")
                    })?;
                    let roles: Vec<String> = roles
                        .split(',')
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect();
                    let user = User {
                        hash: hash.to_string(),
                        roles,
                    };
                    if out.users.insert(name.to_string(), user).is_some() {
                        return Err(format!("line {n}: user {name:?} is defined twice"));
                    }
                }
                ["user", ..] => {
                    return Err(format!(
                        "line {n}: a user line is `user <name> <bcrypt hash> <role>[,<role>...]`"
                    ));
                }
                ["role", role, resource, action] => {
                    let parts: Vec<&str> = resource.split(':').collect();
                    let [ns, group, service] = parts.as_slice() else {
                        return Err(format!(
                            "line {n}: invalid resource {resource:?}: expected \
                             <namespace>:<group>:<service> (use * as a wildcard)"
                        ));
                    };
                    let (read, write) = match *action {
                        "r" => (true, false),
                        "w" => (false, true),
                        "rw" => (true, true),
                        other => {
                            return Err(format!(
                                "line {n}: invalid action {other:?}: expected r, w or rw"
                            ));
                        }
                    };
                    out.roles
                        .entry(role.to_string())
                        .or_default()
                        .push(Permission {
                            parts: [ns.to_string(), group.to_string(), service.to_string()],
                            read,
                            write,
                        });
                }
                ["role", ..] => {
                    return Err(format!(
                        "line {n}: a role line is `role <role> <namespace>:<group>:<service> \
                         <r|w|rw>`"
                    ));
                }
                [other, ..] => {
                    return Err(format!(
                        "line {n}: unknown entry {other:?}: expected `user` or `role`"
                    ));
                }
                [] => {}
            }
        }
        if out.users.is_empty() {
            return Err("no user is defined: add a `user` line".into());
        }
        Ok(out)
    }

    /// Whether `name` exists and `password` is its password (bcrypt, slow on purpose).
    pub fn verify_password(&self, name: &str, password: &str) -> bool {
        self.users
            .get(name)
            .is_some_and(|u| bcrypt::verify(password, &u.hash).unwrap_or(false))
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Whether `name` holds the global admin role.
    pub fn is_global_admin(&self, name: &str) -> bool {
        self.users
            .get(name)
            .is_some_and(|u| u.roles.iter().any(|r| r == GLOBAL_ADMIN_ROLE))
    }

    /// Whether `name` may do `action` on the service `namespace:group:service`.
    pub fn allows(
        &self,
        name: &str,
        [namespace, group, service]: [&str; 3],
        action: Action,
    ) -> bool {
        let Some(user) = self.users.get(name) else {
            return false;
        };
        if self.is_global_admin(name) {
            return true;
        }
        user.roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .any(|p| {
                let may = match action {
                    Action::Read => p.read,
                    Action::Write => p.write,
                };
                may && glob(&p.parts[0], namespace)
                    && glob(&p.parts[1], group)
                    && glob(&p.parts[2], service)
            })
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty(); // no `*` at all: an exact match
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(p: &str) -> String {
        bcrypt::hash_with_salt(p, 4, [7; 16]).unwrap().to_string()
    }

    #[test]
    fn globs_match_runs_within_a_part() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("order*", "orders"));
        assert!(!glob("order*", "my-orders"));
        assert!(glob("*-svc", "a-svc"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXbY"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(
            !glob("ab*ba", "aba"),
            "the prefix and suffix may not overlap"
        );
    }

    #[test]
    fn roles_grant_read_write_or_both_on_matching_resources() {
        let text = format!(
            "# test users\nuser admin {} ROLE_ADMIN\nuser ro {} reader\nuser app {} reader,orders\n\
             role reader *:*:* r\nrole orders public:DEFAULT_GROUP:order* rw\n",
            hash("a"),
            hash("r"),
            hash("o")
        );
        let u = Users::parse(&text).unwrap();
        assert!(u.verify_password("ro", "r"));
        assert!(!u.verify_password("ro", "x"));
        assert!(!u.verify_password("nobody", "r"));
        assert!(u.is_global_admin("admin") && !u.is_global_admin("ro"));
        let svc = ["public", "DEFAULT_GROUP", "orders"];
        assert!(u.allows("ro", svc, Action::Read));
        assert!(!u.allows("ro", svc, Action::Write));
        assert!(u.allows("app", svc, Action::Write));
        assert!(!u.allows("app", ["dev", "DEFAULT_GROUP", "orders"], Action::Write));
        assert!(u.allows("admin", ["dev", "g", "s"], Action::Write));
        assert!(!u.allows("nobody", svc, Action::Read));
    }

    #[test]
    fn bad_lines_are_named() {
        let e = Users::parse("user a nothash r").unwrap_err();
        assert!(e.contains("line 1") && e.contains("bcrypt"), "{e}");
        let e = Users::parse(&format!("user a {} r\nrole r public:x rw", hash("p"))).unwrap_err();
        assert!(e.contains("line 2") && e.contains("resource"), "{e}");
        let e = Users::parse(&format!("user a {} r\nrole r *:*:* all", hash("p"))).unwrap_err();
        assert!(e.contains("invalid action"), "{e}");
        let e = Users::parse("grant x").unwrap_err();
        assert!(e.contains("unknown entry"), "{e}");
        let e = Users::parse("# nothing\n").unwrap_err();
        assert!(e.contains("no user"), "{e}");
    }
}
