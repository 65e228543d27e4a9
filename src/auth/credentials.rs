//! Who may register: HA1 values from an htdigest file and/or one shared
//! password.
//!
//! The htdigest format (Apache `htdigest`) is `user:realm:HA1` per line, with
//! HA1 = hex MD5(user ":" realm ":" password) (RFC 2617 §3.2.2.2). Storing HA1
//! rather than passwords means the file never holds a plaintext password and
//! a request costs no HA1 computation for listed users.
//!
//! Listed users use their own HA1; with a shared password, every other user
//! name is accepted with HA1 = MD5(username:realm:password), the way GB28181
//! platforms authenticate devices that all share one password (DESIGN.md).
//! The store is built once at start and then read by all workers.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::bytes::{hex_decode_into, unquote_into};

/// HA1 in binary: MD5(username ":" realm ":" password), RFC 2617 §3.2.2.2.
pub type Ha1 = [u8; 16];

/// Longest user name (after undoing quoted-pairs) that is looked up when it
/// arrived with escapes; unescaped names of any length are looked up as is.
pub const MAX_ESCAPED_USERNAME: usize = 256;

/// HA1 for a user, realm and password (RFC 2617 §3.2.2.2, algorithm MD5).
/// All three are the plain (unquoted) values.
pub fn ha1(user: &[u8], realm: &[u8], password: &[u8]) -> Ha1 {
    let mut h = Md5::new();
    h.update(user);
    h.update(b":");
    h.update(realm);
    h.update(b":");
    h.update(password);
    h.finalize().into()
}

/// Why an htdigest line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// Fewer than three `:`-separated fields.
    MissingField,
    /// The HA1 field is not exactly 32 hex digits.
    BadHa1,
    /// The user field is empty.
    EmptyUser,
    /// The user appears earlier in the file for the same realm.
    DuplicateUser {
        /// 1-based line of the first occurrence.
        first_line: usize,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::MissingField => f.write_str("missing field, expected user:realm:HA1"),
            LineError::BadHa1 => f.write_str("HA1 is not 32 hex digits"),
            LineError::EmptyUser => f.write_str("empty user name"),
            LineError::DuplicateUser { first_line } => {
                write!(f, "user already listed on line {first_line}")
            }
        }
    }
}

/// Failure to build a [`CredentialStore`] from a file.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A line is not `user:realm:HA1`.
    Malformed {
        /// The file named on the command line.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        what: LineError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, source } => {
                write!(f, "cannot read users file {}: {source}", path.display())
            }
            LoadError::Malformed { path, line, what } => {
                write!(f, "users file {} line {line}: {what}", path.display())
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { source, .. } => Some(source),
            LoadError::Malformed { .. } => None,
        }
    }
}

/// HA1 lookup for one realm. Cheap to share (`Sync`, read-only after start).
pub struct CredentialStore {
    realm: Box<[u8]>,
    /// Users from the file, for `realm` only. std's SipHash with random keys:
    /// user names come from the network (STYLE.md, hash flooding).
    users: HashMap<Box<[u8]>, Ha1>,
    password: Option<Box<[u8]>>,
    skipped_other_realm: usize,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // HA1s and the password are secrets: show only the shape.
        f.debug_struct("CredentialStore")
            .field("realm", &String::from_utf8_lossy(&self.realm))
            .field("users", &self.users.len())
            .field("shared_password", &self.password.is_some())
            .field("skipped_other_realm", &self.skipped_other_realm)
            .finish()
    }
}

impl CredentialStore {
    /// A store for `realm` with no users and no shared password: every
    /// lookup fails until [`with_password`](Self::with_password) or a file.
    pub fn new(realm: &[u8]) -> Self {
        CredentialStore {
            realm: realm.into(),
            users: HashMap::new(),
            password: None,
            skipped_other_realm: 0,
        }
    }

    /// Reads an htdigest file, keeping the lines for `realm`.
    pub fn load(path: &Path, realm: &[u8]) -> Result<Self, LoadError> {
        let text = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_htdigest(&text, path, realm)
    }

    /// Parses htdigest text; `path` is only used in errors.
    ///
    /// Blank lines and lines starting with `#` are ignored, as is
    /// surrounding white space (and the `\r` of CRLF files). Every other
    /// line must be well formed even if it is for another realm, so a typo
    /// is reported rather than silently dropping a user; well-formed lines
    /// for another realm are counted in
    /// [`skipped_other_realm`](Self::skipped_other_realm).
    pub fn from_htdigest(text: &[u8], path: &Path, realm: &[u8]) -> Result<Self, LoadError> {
        let mut store = Self::new(realm);
        let mut first_seen: HashMap<&[u8], usize> = HashMap::new();
        for (idx, raw_line) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = idx + 1;
            let line = raw_line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let malformed = |what| LoadError::Malformed {
                path: path.to_path_buf(),
                line: line_no,
                what,
            };
            let mut fields = line.splitn(3, |&b| b == b':');
            let (Some(user), Some(line_realm), Some(ha1_hex)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed(LineError::MissingField));
            };
            if user.is_empty() {
                return Err(malformed(LineError::EmptyUser));
            }
            let mut ha1 = [0u8; 16];
            if !hex_decode_into(ha1_hex, &mut ha1) {
                return Err(malformed(LineError::BadHa1));
            }
            if line_realm != realm {
                store.skipped_other_realm += 1;
                continue;
            }
            if let Some(&first_line) = first_seen.get(user) {
                return Err(malformed(LineError::DuplicateUser { first_line }));
            }
            first_seen.insert(user, line_no);
            store.users.insert(user.into(), ha1);
        }
        Ok(store)
    }

    /// Adds the shared password used for every user not in the file.
    pub fn with_password(mut self, password: &[u8]) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The realm this store answers for.
    pub fn realm(&self) -> &[u8] {
        &self.realm
    }

    /// Users loaded from the file for this realm.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Well-formed file lines ignored because they name another realm.
    pub fn skipped_other_realm(&self) -> usize {
        self.skipped_other_realm
    }

    /// Whether a shared password is set.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether no lookup can ever succeed (no file users, no password).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.password.is_none()
    }

    /// True when `user` (an unquoted name, e.g. the AOR's user part) has its
    /// own line in the credentials file: only that user may register it.
    pub fn is_listed(&self, user: &[u8]) -> bool {
        self.users.contains_key(user)
    }

    /// True when the digest `username` (as quoted in the header) authenticates
    /// through its own file line rather than the shared password.
    pub fn is_listed_username(&self, username: &[u8]) -> bool {
        let mut buf = [0u8; MAX_ESCAPED_USERNAME];
        unquote_into(username, &mut buf).is_some_and(|u| self.users.contains_key(u))
    }

    /// HA1 for `username` as it appears between the quotes of the
    /// Authorization header (quoted-pairs are undone here).
    ///
    /// File users get their stored HA1; any other name gets
    /// MD5(username:realm:password) when a shared password is set; `None`
    /// otherwise. On `None`, verify against [`super::dummy_ha1`] anyway (or
    /// use [`super::verify_user`]) so an unknown user costs the same as a
    /// wrong password (RFC 7616 §5.3 on not revealing valid user names).
    pub fn lookup(&self, username: &[u8]) -> Option<Ha1> {
        let mut buf = [0u8; MAX_ESCAPED_USERNAME];
        let user = unquote_into(username, &mut buf)?;
        if let Some(ha1) = self.users.get(user) {
            return Some(*ha1);
        }
        self.password
            .as_deref()
            .map(|password| ha1(user, &self.realm, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/etc/sipreg/users")
    }

    /// An arbitrary HA1 (its password does not matter here).
    const SOME_HA1: &str = "b0f6e4b0e8f1e2cd3e2d3fe8d4aa0f60";

    #[test]
    fn ha1_matches_rfc_2617_example() {
        // RFC 2617 §3.5: Mufasa / testrealm@host.com / "Circle Of Life".
        let h = ha1(b"Mufasa", b"testrealm@host.com", b"Circle Of Life");
        assert_eq!(
            &super::super::bytes::hex16(&h),
            b"939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn good_file_loads() {
        let text = format!(
            "# sipreg users\n\
             \n\
             admin:hik:{}\r\n\
             \x20 alice:hik:{SOME_HA1}  \n\
             bob:hik:{}\n",
            hex_str(&ha1(b"admin", b"hik", b"12345")),
            SOME_HA1.to_ascii_uppercase(),
        );
        let store = CredentialStore::from_htdigest(text.as_bytes(), path(), b"hik").expect("loads");
        assert_eq!(store.users(), 3);
        assert_eq!(store.skipped_other_realm(), 0);
        assert_eq!(
            store.lookup(b"admin"),
            Some(ha1(b"admin", b"hik", b"12345"))
        );
        let mut expected = [0u8; 16];
        assert!(hex_decode_into(SOME_HA1.as_bytes(), &mut expected));
        assert_eq!(store.lookup(b"alice"), Some(expected));
        assert_eq!(store.lookup(b"bob"), Some(expected));
        assert_eq!(store.lookup(b"carol"), None);
        assert_eq!(
            store.lookup(b"Admin"),
            None,
            "user names are case-sensitive"
        );
    }

    #[test]
    fn other_realm_lines_are_skipped_and_counted() {
        let text = format!("a:hik:{SOME_HA1}\nb:xivo:{SOME_HA1}\nc:other:{SOME_HA1}\n");
        let store = CredentialStore::from_htdigest(text.as_bytes(), path(), b"hik").expect("loads");
        assert_eq!(store.users(), 1);
        assert_eq!(store.skipped_other_realm(), 2);
        assert_eq!(store.lookup(b"b"), None);
    }

    fn malformed_line(text: &str) -> (usize, LineError) {
        match CredentialStore::from_htdigest(text.as_bytes(), path(), b"hik") {
            Err(LoadError::Malformed {
                line,
                what,
                path: p,
            }) => {
                assert_eq!(p, path());
                (line, what)
            }
            other => panic!("expected a malformed line, got {other:?}"),
        }
    }

    #[test]
    fn malformed_lines_report_their_line_number() {
        let good = format!("a:hik:{SOME_HA1}\n# comment\n\n");
        assert_eq!(
            malformed_line(&format!("{good}b:hik\n")),
            (4, LineError::MissingField)
        );
        assert_eq!(
            malformed_line(&format!("{good}b\n")),
            (4, LineError::MissingField)
        );
        assert_eq!(
            malformed_line(&format!("{good}b:hik:1234\n")),
            (4, LineError::BadHa1)
        );
        assert_eq!(
            malformed_line(&format!("{good}b:hik:{}zz\n", &SOME_HA1[..30])),
            (4, LineError::BadHa1)
        );
        assert_eq!(
            malformed_line(&format!("{good}b:hik:{SOME_HA1}:extra\n")),
            (4, LineError::BadHa1)
        );
        assert_eq!(
            malformed_line(&format!("{good}:hik:{SOME_HA1}\n")),
            (4, LineError::EmptyUser)
        );
        assert_eq!(
            malformed_line(&format!("{good}a:hik:{SOME_HA1}\n")),
            (4, LineError::DuplicateUser { first_line: 1 })
        );
        // Lines for another realm must still be well formed.
        assert_eq!(
            malformed_line(&format!("{good}b:xivo:nothex\n")),
            (4, LineError::BadHa1)
        );
        // The same user in two realms is not a duplicate.
        let two = format!("a:hik:{SOME_HA1}\na:xivo:{SOME_HA1}\n");
        assert!(CredentialStore::from_htdigest(two.as_bytes(), path(), b"hik").is_ok());
    }

    #[test]
    fn errors_display_one_clear_line() {
        let err = LoadError::Malformed {
            path: path().to_path_buf(),
            line: 7,
            what: LineError::BadHa1,
        };
        assert_eq!(
            err.to_string(),
            "users file /etc/sipreg/users line 7: HA1 is not 32 hex digits"
        );
        let err = CredentialStore::load(Path::new("/nonexistent/sipreg-users"), b"hik")
            .expect_err("missing file");
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot read users file /nonexistent/sipreg-users: "),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn load_reads_a_real_file() {
        let dir = std::env::temp_dir().join(format!("sipreg-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("users");
        std::fs::write(&file, format!("admin:hik:{SOME_HA1}\n")).expect("write");
        let store = CredentialStore::load(&file, b"hik").expect("loads");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(store.users(), 1);
    }

    #[test]
    fn shared_password_covers_everyone_else() {
        let text = format!("alice:hik:{SOME_HA1}\n");
        let store = CredentialStore::from_htdigest(text.as_bytes(), path(), b"hik")
            .expect("loads")
            .with_password(b"12345");
        let mut alice = [0u8; 16];
        assert!(hex_decode_into(SOME_HA1.as_bytes(), &mut alice));
        assert_eq!(store.lookup(b"alice"), Some(alice), "file wins");
        assert_eq!(
            store.lookup(b"admin"),
            Some(ha1(b"admin", b"hik", b"12345"))
        );
        assert_eq!(
            store.lookup(b"130909113319427420"),
            Some(ha1(b"130909113319427420", b"hik", b"12345"))
        );
    }

    #[test]
    fn escaped_user_names_are_unquoted_before_lookup() {
        let store = CredentialStore::new(b"hik").with_password(b"pw");
        assert_eq!(store.lookup(b"a\\\"b"), Some(ha1(b"a\"b", b"hik", b"pw")));
        let long = [b'\\'; 2 * MAX_ESCAPED_USERNAME + 2];
        assert_eq!(store.lookup(&long), None);
    }

    #[test]
    fn empty_store_knows_nobody() {
        let store = CredentialStore::new(b"hik");
        assert!(store.is_empty());
        assert_eq!(store.lookup(b"admin"), None);
        assert!(!format!("{store:?}").contains("12345"));
    }

    fn hex_str(h: &Ha1) -> String {
        String::from_utf8(super::super::bytes::hex16(h).to_vec()).expect("hex is ascii")
    }
}
