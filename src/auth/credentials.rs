//! Who may register, and with which digest algorithms: HA1 values from an
//! htdigest file and/or one shared password.
//!
//! # The credentials file
//!
//! One user per line, an extension of Apache's htdigest format that htdigest
//! files keep reading as before:
//!
//! ```text
//! user:realm:MD5-HA1                  # htdigest as written by Apache's tool
//! user:realm:MD5-HA1:SHA-256-HA1      # both algorithms
//! user:realm::SHA-256-HA1             # SHA-256 only: MD5 refused for this user
//! ```
//!
//! with MD5-HA1 = hex MD5(user ":" realm ":" password) (32 digits, RFC 2617
//! §3.2.2.2) and SHA-256-HA1 = hex SHA-256 of the same string (64 digits,
//! RFC 7616 §3.4.2). Storing HA1 rather than passwords means the file never
//! holds a plaintext password and a request costs no HA1 computation for
//! listed users. A user without a SHA-256 HA1 cannot answer a SHA-256
//! challenge (the HA1 of one algorithm cannot be turned into the other's), so
//! such a user answers the MD5 challenge, as devices that only know MD5 do.
//!
//! Listed users use their own HA1; with a shared password, every other user
//! name is accepted with HA1 = H(username:realm:password) for either
//! algorithm, the way GB28181 platforms authenticate devices that all share
//! one password (DESIGN.md). The store is built once at start and then read
//! by all workers.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use sha2::Sha256;

use super::bytes::{hex_decode_into, unquote_into};
use super::digest::Algorithm;

/// HA1 in binary: MD5(username ":" realm ":" password), RFC 2617 §3.2.2.2.
pub type Ha1 = [u8; 16];

/// HA1 for `algorithm=SHA-256` in binary: SHA-256(username ":" realm ":"
/// password), RFC 7616 §3.4.2.
pub type Ha1Sha256 = [u8; 32];

/// H(A1) for one algorithm: what a verification or a client response needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ha1Key {
    /// For `algorithm=MD5` (or none).
    Md5(Ha1),
    /// For `algorithm=SHA-256`.
    Sha256(Ha1Sha256),
}

impl Ha1Key {
    /// H(user ":" realm ":" password) with `algorithm`'s hash (plain values).
    pub fn derive(algorithm: Algorithm, user: &[u8], realm: &[u8], password: &[u8]) -> Ha1Key {
        match algorithm {
            Algorithm::Md5 => Ha1Key::Md5(ha1(user, realm, password)),
            Algorithm::Sha256 => Ha1Key::Sha256(ha1_sha256(user, realm, password)),
        }
    }

    /// The algorithm this H(A1) is for.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Ha1Key::Md5(_) => Algorithm::Md5,
            Ha1Key::Sha256(_) => Algorithm::Sha256,
        }
    }

    /// The binary H(A1): 16 or 32 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Ha1Key::Md5(h) => h,
            Ha1Key::Sha256(h) => h,
        }
    }
}

impl fmt::Debug for Ha1Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A password equivalent: never printed.
        write!(f, "Ha1Key({}, ..)", self.algorithm())
    }
}

/// HA1 for a user, realm and password with SHA-256 (RFC 7616 §3.4.2).
/// All three are the plain (unquoted) values.
pub fn ha1_sha256(user: &[u8], realm: &[u8], password: &[u8]) -> Ha1Sha256 {
    ha1_with::<Sha256>(user, realm, password).into()
}

/// `H(user ":" realm ":" password)`: the HA1 of either algorithm.
fn ha1_with<D: Digest>(user: &[u8], realm: &[u8], password: &[u8]) -> md5::digest::Output<D> {
    let mut h = D::new();
    h.update(user);
    h.update(b":");
    h.update(realm);
    h.update(b":");
    h.update(password);
    h.finalize()
}

/// A listed user's HA1s; at least one is present.
#[derive(Clone, Copy)]
struct UserHa1 {
    md5: Option<Ha1>,
    sha256: Option<Ha1Sha256>,
}

impl UserHa1 {
    fn key(&self, algorithm: Algorithm) -> Option<Ha1Key> {
        match algorithm {
            Algorithm::Md5 => self.md5.map(Ha1Key::Md5),
            Algorithm::Sha256 => self.sha256.map(Ha1Key::Sha256),
        }
    }
}

/// Longest user name (after undoing quoted-pairs) that is looked up when it
/// arrived with escapes; unescaped names of any length are looked up as is.
pub const MAX_ESCAPED_USERNAME: usize = 256;

/// HA1 for a user, realm and password (RFC 2617 §3.2.2.2, algorithm MD5).
/// All three are the plain (unquoted) values.
pub fn ha1(user: &[u8], realm: &[u8], password: &[u8]) -> Ha1 {
    ha1_with::<Md5>(user, realm, password).into()
}

/// Why an htdigest line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// Fewer than three `:`-separated fields.
    MissingField,
    /// The (MD5) HA1 field is neither empty nor exactly 32 hex digits.
    BadHa1,
    /// The fourth (SHA-256 HA1) field is neither empty nor exactly 64 hex
    /// digits.
    BadSha256Ha1,
    /// Both HA1 fields are empty.
    MissingHa1,
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
            LineError::BadSha256Ha1 => f.write_str("SHA-256 HA1 is not 64 hex digits"),
            LineError::MissingHa1 => {
                f.write_str("no HA1, expected user:realm:MD5-HA1[:SHA-256-HA1]")
            }
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
    /// A line is not `user:realm:HA1[:SHA-256-HA1]`.
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
    users: HashMap<Box<[u8]>, UserHa1>,
    password: Option<Box<[u8]>>,
    skipped_other_realm: usize,
    /// Challenges offered, in order; responses with another algorithm are
    /// refused.
    algorithms: Vec<Algorithm>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // HA1s and the password are secrets: show only the shape.
        f.debug_struct("CredentialStore")
            .field("realm", &String::from_utf8_lossy(&self.realm))
            .field("users", &self.users.len())
            .field("shared_password", &self.password.is_some())
            .field("skipped_other_realm", &self.skipped_other_realm)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl CredentialStore {
    /// A store for `realm` with no users and no shared password: every
    /// lookup fails until [`with_password`](Self::with_password) or a file.
    /// It offers [`Algorithm::ALL`] (SHA-256, then MD5) until
    /// [`with_algorithms`](Self::with_algorithms).
    pub fn new(realm: &[u8]) -> Self {
        CredentialStore {
            realm: realm.into(),
            users: HashMap::new(),
            password: None,
            skipped_other_realm: 0,
            algorithms: Algorithm::ALL.to_vec(),
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
            let mut fields = line.splitn(4, |&b| b == b':');
            let (Some(user), Some(line_realm), Some(md5_hex)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed(LineError::MissingField));
            };
            if user.is_empty() {
                return Err(malformed(LineError::EmptyUser));
            }
            let entry = parse_ha1s(md5_hex, fields.next().unwrap_or(b"")).map_err(malformed)?;
            if line_realm != realm {
                store.skipped_other_realm += 1;
                continue;
            }
            if let Some(&first_line) = first_seen.get(user) {
                return Err(malformed(LineError::DuplicateUser { first_line }));
            }
            first_seen.insert(user, line_no);
            store.users.insert(user.into(), entry);
        }
        Ok(store)
    }

    /// Sets the digest algorithms offered, in challenge order (RFC 8760
    /// §2.4: strongest first); a response with any other algorithm is
    /// refused like a wrong password. An empty list is ignored (the command
    /// line refuses it).
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        debug_assert!(!algorithms.is_empty(), "no digest algorithm offered");
        if !algorithms.is_empty() {
            self.algorithms = algorithms.to_vec();
        }
        self
    }

    /// The algorithms offered, in challenge order.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Whether responses with `algorithm` are accepted.
    pub fn offers(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }

    /// File users that have no HA1 for `algorithm` (they cannot answer its
    /// challenge; worth a warning when it is the only one offered).
    pub fn users_without(&self, algorithm: Algorithm) -> usize {
        self.users
            .values()
            .filter(|u| u.key(algorithm).is_none())
            .count()
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

    /// MD5 HA1 for `username` as it appears between the quotes of the
    /// Authorization header (quoted-pairs are undone here); see
    /// [`lookup_key`](Self::lookup_key).
    pub fn lookup(&self, username: &[u8]) -> Option<Ha1> {
        match self.lookup_key(username, Algorithm::Md5)? {
            Ha1Key::Md5(h) => Some(h),
            Ha1Key::Sha256(_) => None,
        }
    }

    /// H(A1) for `username` (as it appears between the quotes of the
    /// Authorization header; quoted-pairs are undone here) and `algorithm`.
    ///
    /// File users get their stored HA1 for that algorithm, `None` when their
    /// line has none; any other name gets H(username:realm:password) when a
    /// shared password is set; `None` otherwise. On `None`, verify against
    /// [`super::dummy_key`] anyway (or use [`super::verify_user_key`]) so an
    /// unknown user costs the same as a wrong password (RFC 7616 §5.3 on not
    /// revealing valid user names).
    pub fn lookup_key(&self, username: &[u8], algorithm: Algorithm) -> Option<Ha1Key> {
        let mut buf = [0u8; MAX_ESCAPED_USERNAME];
        let user = unquote_into(username, &mut buf)?;
        if let Some(entry) = self.users.get(user) {
            return entry.key(algorithm);
        }
        self.password
            .as_deref()
            .map(|password| Ha1Key::derive(algorithm, user, &self.realm, password))
    }
}

/// The HA1 fields of a line: MD5 (empty or 32 hex digits) and SHA-256
/// (empty or 64 hex digits), at least one present.
fn parse_ha1s(md5_hex: &[u8], sha256_hex: &[u8]) -> Result<UserHa1, LineError> {
    let md5 = if md5_hex.is_empty() {
        None
    } else {
        let mut h = [0u8; 16];
        if !hex_decode_into(md5_hex, &mut h) {
            return Err(LineError::BadHa1);
        }
        Some(h)
    };
    let sha256 = if sha256_hex.is_empty() {
        None
    } else {
        let mut h = [0u8; 32];
        if !hex_decode_into(sha256_hex, &mut h) {
            return Err(LineError::BadSha256Ha1);
        }
        Some(h)
    };
    if md5.is_none() && sha256.is_none() {
        return Err(LineError::MissingHa1);
    }
    Ok(UserHa1 { md5, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/etc/sipreg/users")
    }

    /// An arbitrary HA1 (its password does not matter here).
    const SOME_HA1: &str = "b0f6e4b0e8f1e2cd3e2d3fe8d4aa0f60";
    /// An arbitrary SHA-256 HA1.
    const SOME_SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

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
        let cases = [
            ("b:hik\n".to_string(), LineError::MissingField),
            ("b\n".to_string(), LineError::MissingField),
            ("b:hik:1234\n".to_string(), LineError::BadHa1),
            (format!("b:hik:{}zz\n", &SOME_HA1[..30]), LineError::BadHa1),
            (format!("b:hik:{SOME_HA1}:extra\n"), LineError::BadSha256Ha1),
            (
                format!("b:hik:{SOME_HA1}:{SOME_HA1}\n"),
                LineError::BadSha256Ha1,
            ),
            (
                format!("b:hik:{SOME_HA1}:{SOME_SHA}:x\n"),
                LineError::BadSha256Ha1,
            ),
            // A SHA-256 HA1 goes in the fourth field.
            (format!("b:hik:{SOME_SHA}\n"), LineError::BadHa1),
            ("b:hik:\n".to_string(), LineError::MissingHa1),
            ("b:hik::\n".to_string(), LineError::MissingHa1),
            (format!(":hik:{SOME_HA1}\n"), LineError::EmptyUser),
            (
                format!("a:hik:{SOME_HA1}\n"),
                LineError::DuplicateUser { first_line: 1 },
            ),
            // Lines for another realm must still be well formed.
            ("b:xivo:nothex\n".to_string(), LineError::BadHa1),
        ];
        for (bad, want) in cases {
            assert_eq!(
                malformed_line(&format!("{good}{bad}")),
                (4, want),
                "{bad:?}"
            );
        }
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

    #[test]
    fn ha1_sha256_matches_rfc_7616_example() {
        // RFC 7616 §3.9.1: Mufasa / http-auth@example.org / "Circle of Life".
        let h = ha1_sha256(b"Mufasa", b"http-auth@example.org", b"Circle of Life");
        let mut hex = [0u8; 64];
        super::super::bytes::hex_encode_into(&h, &mut hex);
        assert_eq!(
            &hex[..],
            b"7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
        assert_eq!(
            Ha1Key::derive(
                Algorithm::Sha256,
                b"Mufasa",
                b"http-auth@example.org",
                b"Circle of Life"
            ),
            Ha1Key::Sha256(h)
        );
        let md5 = ha1(b"Mufasa", b"http-auth@example.org", b"Circle of Life");
        assert_eq!(
            &super::super::bytes::hex16(&md5),
            b"3d78807defe7de2157e2b0b6573a855f"
        );
        assert!(!format!("{:?}", Ha1Key::Md5(md5)).contains("3d"));
    }

    #[test]
    fn lines_hold_either_or_both_ha1_forms() {
        let text = format!(
            "md5only:hik:{SOME_HA1}\n\
             both:hik:{SOME_HA1}:{SOME_SHA}\n\
             shaonly:hik::{SOME_SHA}\n\
             trailing:hik:{SOME_HA1}:\n"
        );
        let store = CredentialStore::from_htdigest(text.as_bytes(), path(), b"hik").expect("loads");
        assert_eq!(store.users(), 4);
        let mut md5 = [0u8; 16];
        assert!(hex_decode_into(SOME_HA1.as_bytes(), &mut md5));
        let mut sha = [0u8; 32];
        assert!(hex_decode_into(SOME_SHA.as_bytes(), &mut sha));
        let key = |u: &[u8], a| store.lookup_key(u, a);
        assert_eq!(key(b"md5only", Algorithm::Md5), Some(Ha1Key::Md5(md5)));
        assert_eq!(key(b"md5only", Algorithm::Sha256), None);
        assert_eq!(key(b"both", Algorithm::Md5), Some(Ha1Key::Md5(md5)));
        assert_eq!(key(b"both", Algorithm::Sha256), Some(Ha1Key::Sha256(sha)));
        assert_eq!(key(b"shaonly", Algorithm::Md5), None);
        assert_eq!(store.lookup(b"shaonly"), None);
        assert_eq!(
            key(b"shaonly", Algorithm::Sha256),
            Some(Ha1Key::Sha256(sha))
        );
        assert_eq!(key(b"trailing", Algorithm::Sha256), None);
        assert!(store.is_listed(b"shaonly"));
        assert_eq!(store.users_without(Algorithm::Sha256), 2);
        assert_eq!(store.users_without(Algorithm::Md5), 1);

        // A listed user without a SHA-256 HA1 does not fall back to the
        // shared password: the file decides for listed users.
        let store = store.with_password(b"12345");
        assert_eq!(key2(&store, b"md5only", Algorithm::Sha256), None);
        assert_eq!(
            key2(&store, b"device", Algorithm::Sha256),
            Some(Ha1Key::Sha256(ha1_sha256(b"device", b"hik", b"12345")))
        );
        assert_eq!(
            key2(&store, b"device", Algorithm::Md5),
            Some(Ha1Key::Md5(ha1(b"device", b"hik", b"12345")))
        );
    }

    fn key2(store: &CredentialStore, u: &[u8], a: Algorithm) -> Option<Ha1Key> {
        store.lookup_key(u, a)
    }

    #[test]
    fn algorithms_default_to_sha256_then_md5_and_can_be_narrowed() {
        let store = CredentialStore::new(b"hik");
        assert_eq!(store.algorithms(), [Algorithm::Sha256, Algorithm::Md5]);
        assert!(store.offers(Algorithm::Md5));
        let store = store.with_algorithms(&[Algorithm::Md5]);
        assert_eq!(store.algorithms(), [Algorithm::Md5]);
        assert!(!store.offers(Algorithm::Sha256));
    }

    fn hex_str(h: &Ha1) -> String {
        String::from_utf8(super::super::bytes::hex16(h).to_vec()).expect("hex is ascii")
    }
}
