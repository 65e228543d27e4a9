//! Known header identities: every header of RFC 3261 §20 plus the common
//! extensions, with their compact forms (RFC 3261 §7.3.3, RFC 3265, RFC 3515,
//! RFC 3892, RFC 4028, RFC 8224), matched case-insensitively.

macro_rules! headers {
    ($( $id:ident => $name:literal $(, $compact:literal)? ; )*) => {
        /// A header the scanner recognises by name; `Other` for the rest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum HeaderId {
            /// Any header not listed; first so an empty header table is all zeroes.
            Other,
            $( $id, )*
        }

        impl HeaderId {
            /// Every known id, in declaration order (`Other` excluded).
            pub const ALL: &'static [HeaderId] = &[$( HeaderId::$id, )*];
            /// Number of ids including `Other`; sizes per-id lookup tables.
            pub const COUNT: usize = Self::ALL.len() + 1;

            /// The canonical (long) header name.
            pub const fn name(self) -> &'static str {
                match self { $( HeaderId::$id => $name, )* HeaderId::Other => "" }
            }

            /// The compact form, if the header has one.
            pub const fn compact(self) -> Option<u8> {
                match self { $( HeaderId::$id => headers!(@compact $($compact)?), )* HeaderId::Other => None }
            }
        }
    };
    (@compact $c:literal) => { Some($c) };
    (@compact) => { None };
}

headers! {
    Accept => "Accept";
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    AlertInfo => "Alert-Info";
    Allow => "Allow";
    AuthenticationInfo => "Authentication-Info";
    Authorization => "Authorization";
    CallId => "Call-ID", b'i';
    CallInfo => "Call-Info";
    Contact => "Contact", b'm';
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", b'e';
    ContentLanguage => "Content-Language";
    ContentLength => "Content-Length", b'l';
    ContentType => "Content-Type", b'c';
    CSeq => "CSeq";
    Date => "Date";
    ErrorInfo => "Error-Info";
    Expires => "Expires";
    From => "From", b'f';
    InReplyTo => "In-Reply-To";
    MaxForwards => "Max-Forwards";
    MimeVersion => "MIME-Version";
    MinExpires => "Min-Expires";
    Organization => "Organization";
    Priority => "Priority";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RecordRoute => "Record-Route";
    ReplyTo => "Reply-To";
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    Server => "Server";
    Subject => "Subject", b's';
    Supported => "Supported", b'k';
    Timestamp => "Timestamp";
    To => "To", b't';
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    Via => "Via", b'v';
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
    // Extensions in everyday use by phones and registrars.
    Path => "Path";
    ServiceRoute => "Service-Route";
    Event => "Event", b'o';
    AllowEvents => "Allow-Events", b'u';
    ReferTo => "Refer-To", b'r';
    ReferredBy => "Referred-By", b'b';
    SessionExpires => "Session-Expires", b'x';
    Identity => "Identity", b'y';
    SubscriptionState => "Subscription-State";
}

/// Compact-form lookup indexed by the lower-case letter.
const COMPACT: [HeaderId; 26] = {
    let mut t = [HeaderId::Other; 26];
    let mut i = 0;
    while i < HeaderId::ALL.len() {
        let id = HeaderId::ALL[i];
        if let Some(c) = id.compact() {
            t[(c - b'a') as usize] = id;
        }
        i += 1;
    }
    t
};

/// One more than the longest known name ("Authentication-Info", 19 bytes).
const MAX_NAME: usize = 20;

/// Candidates by (first letter, length); no pair has more than two names.
const BY_FIRST_AND_LEN: [[[HeaderId; 2]; MAX_NAME]; 26] = {
    let mut t = [[[HeaderId::Other; 2]; MAX_NAME]; 26];
    let mut i = 0;
    while i < HeaderId::ALL.len() {
        let id = HeaderId::ALL[i];
        let name = id.name().as_bytes();
        let cell = &mut t[((name[0] | 0x20) - b'a') as usize][name.len()];
        if matches!(cell[0], HeaderId::Other) {
            cell[0] = id;
        } else {
            assert!(
                matches!(cell[1], HeaderId::Other),
                "three names share a cell"
            );
            cell[1] = id;
        }
        i += 1;
    }
    t
};

/// Each known name case-folded (bit 0x20 set on every byte) and packed into
/// three little-endian words, zero-padded, so a lookup compares three words.
const FOLDED: [[u64; 3]; HeaderId::COUNT] = {
    let mut t = [[0u64; 3]; HeaderId::COUNT];
    let mut i = 0;
    while i < HeaderId::ALL.len() {
        let id = HeaderId::ALL[i];
        let name = id.name().as_bytes();
        let mut j = 0;
        while j < name.len() {
            t[id as usize][j / 8] |= ((name[j] | 0x20) as u64) << ((j % 8) * 8);
            j += 1;
        }
        i += 1;
    }
    t
};

/// Folds and packs a name the way [`FOLDED`] is built. Setting bit 0x20 folds
/// case exactly for letters; the known names hold only letters and '-', and no
/// token byte other than a letter (either case) or '-' folds onto one (only CR
/// folds onto '-', and CR is not a token byte).
#[inline]
fn fold(name: &[u8]) -> [u64; 3] {
    let mut w = [0u64; 3];
    for (i, &c) in name.iter().take(24).enumerate() {
        w[i / 8] |= u64::from(c | 0x20) << ((i % 8) * 8);
    }
    w
}

impl HeaderId {
    /// Identifies a header name, ignoring case. `name` must be a token (the
    /// scanner checks it first); other bytes may be mistaken for '-'.
    #[inline]
    pub fn lookup(name: &[u8]) -> HeaderId {
        Self::lookup_folded(name, &fold(name))
    }

    /// [`HeaderId::lookup`] for a name whose folded words the caller computed
    /// while scanning it (the scanner does, to touch each name byte once).
    #[inline]
    pub(crate) fn lookup_folded(name: &[u8], folded: &[u64; 3]) -> HeaderId {
        let len = name.len();
        let first = name.first().map_or(0, |c| c | 0x20);
        if len < 2 || !first.is_ascii_lowercase() || len >= MAX_NAME {
            return match name {
                [c] if (c | 0x20).is_ascii_lowercase() => COMPACT[usize::from((c | 0x20) - b'a')],
                _ => HeaderId::Other,
            };
        }
        // Dispatch on (first letter, length) to at most two candidates, then
        // compare three words.
        let [a, b] = BY_FIRST_AND_LEN[usize::from(first - b'a')][len];
        if a != HeaderId::Other && *folded == FOLDED[a as usize] {
            return a;
        }
        if b != HeaderId::Other && *folded == FOLDED[b as usize] {
            return b;
        }
        HeaderId::Other
    }

    /// Headers whose value is a comma-separated list (RFC 3261 §7.3.1): several
    /// values may share one header line, and splitting happens only outside quotes
    /// and angle brackets. Authorization-style headers are not lists: their commas
    /// separate parameters of one credential.
    pub const fn is_list(self) -> bool {
        use HeaderId::*;
        matches!(
            self,
            Accept
                | AcceptEncoding
                | AcceptLanguage
                | AlertInfo
                | Allow
                | CallInfo
                | Contact
                | ContentEncoding
                | ContentLanguage
                | ErrorInfo
                | InReplyTo
                | ProxyRequire
                | RecordRoute
                | Require
                | Route
                | Supported
                | Unsupported
                | Via
                | Warning
                | Path
                | ServiceRoute
                | AllowEvents
        )
    }

    /// Headers that may appear at most once in a message (RFC 3261 §7.3.1 and
    /// §8.1.1; RFC 4475 §3.3.8 and §3.3.9 show why duplicates are rejected).
    pub const fn is_singleton(self) -> bool {
        use HeaderId::*;
        matches!(
            self,
            CallId | CSeq | From | To | MaxForwards | ContentLength | Expires
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_long_and_compact_name_round_trips() {
        for &id in HeaderId::ALL {
            assert_eq!(HeaderId::lookup(id.name().as_bytes()), id, "{}", id.name());
            let upper = id.name().to_ascii_uppercase();
            assert_eq!(HeaderId::lookup(upper.as_bytes()), id);
            let lower = id.name().to_ascii_lowercase();
            assert_eq!(HeaderId::lookup(lower.as_bytes()), id);
            if let Some(c) = id.compact() {
                assert_eq!(HeaderId::lookup(&[c]), id);
                assert_eq!(HeaderId::lookup(&[c.to_ascii_uppercase()]), id);
            }
        }
        assert_eq!(HeaderId::COUNT, HeaderId::ALL.len() + 1);
    }

    #[test]
    fn compact_forms_match_the_rfcs() {
        let expected = [
            (b'i', HeaderId::CallId),
            (b'm', HeaderId::Contact),
            (b'e', HeaderId::ContentEncoding),
            (b'l', HeaderId::ContentLength),
            (b'c', HeaderId::ContentType),
            (b'f', HeaderId::From),
            (b's', HeaderId::Subject),
            (b'k', HeaderId::Supported),
            (b't', HeaderId::To),
            (b'v', HeaderId::Via),
            (b'o', HeaderId::Event),
            (b'u', HeaderId::AllowEvents),
            (b'r', HeaderId::ReferTo),
            (b'b', HeaderId::ReferredBy),
            (b'x', HeaderId::SessionExpires),
            (b'y', HeaderId::Identity),
        ];
        for (c, id) in expected {
            assert_eq!(HeaderId::lookup(&[c]), id);
        }
        assert_eq!(HeaderId::lookup(b"a"), HeaderId::Other);
        assert_eq!(HeaderId::lookup(b"1"), HeaderId::Other);
        assert_eq!(HeaderId::lookup(b"X-Custom"), HeaderId::Other);
        assert_eq!(HeaderId::lookup(b"C%6Fntact"), HeaderId::Other);
        assert_eq!(HeaderId::lookup(b""), HeaderId::Other);
        assert_eq!(HeaderId::lookup(b"Authentication-Info-X"), HeaderId::Other);
        assert_eq!(HeaderId::lookup(b"Call_ID"), HeaderId::Other);
    }
}
