//! Splitting comma-separated header values (RFC 3261 §7.3.1) outside quoted
//! strings and angle brackets, so `"Doe, J" <sip:a@b;x=1,2>` stays one element.

use super::bytes;

/// Iterates the trimmed elements of a list-valued header. Empty elements (from
/// stray commas) are yielded as empty slices so views can reject them.
#[derive(Debug, Clone)]
pub struct ListIter<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> ListIter<'a> {
    pub fn new(value: &'a [u8]) -> Self {
        ListIter {
            rest: Some(value).filter(|v| !bytes::trim(v).is_empty()),
        }
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let mut i = 0;
        // Jump between the only bytes that matter instead of walking each one.
        while let Some(off) = memchr::memchr3(b',', b'"', b'<', &rest[i..]) {
            let at = i + off;
            let skip_to = match rest[at] {
                b',' => {
                    self.rest = Some(&rest[at + 1..]);
                    return Some(bytes::trim(&rest[..at]));
                }
                b'"' => bytes::closing_quote(&rest[at..]).map(|c| at + c + 1),
                _ => bytes::find(b'>', &rest[at..]).map(|c| at + c + 1),
            };
            match skip_to {
                Some(next) => i = next,
                // Unbalanced quote or bracket: the rest is one (bad) element.
                None => break,
            }
        }
        self.rest = None;
        Some(bytes::trim(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(v: &[u8]) -> Vec<&[u8]> {
        ListIter::new(v).collect()
    }

    #[test]
    fn splits_outside_quotes_and_angles() {
        assert_eq!(
            split(b"\"Doe, J\" <sip:a@b;x=1,2>;q=0.5 , <sip:c@d>"),
            vec![&b"\"Doe, J\" <sip:a@b;x=1,2>;q=0.5"[..], b"<sip:c@d>"]
        );
        assert_eq!(
            split(b"INVITE, ACK,CANCEL"),
            vec![&b"INVITE"[..], b"ACK", b"CANCEL"]
        );
        assert_eq!(
            split(b"\"a\\\",b\" <sip:x>"),
            vec![&b"\"a\\\",b\" <sip:x>"[..]]
        );
        assert_eq!(split(b"a,,b"), vec![&b"a"[..], b"", b"b"]);
        assert!(split(b"  ").is_empty());
        assert_eq!(
            split(b"SIP/2.0/TCP a;\r\n branch = x ,\r\n SIP/2.0/UDP b"),
            vec![&b"SIP/2.0/TCP a;\r\n branch = x"[..], b"SIP/2.0/UDP b"]
        );
    }
}
