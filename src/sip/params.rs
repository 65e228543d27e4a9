//! `;name[=value]` parameter lists (RFC 3261 §25.1 generic-param), as found after
//! a Via sent-by, a name-addr, or inside a SIP URI. Names compare case-insensitively;
//! values are raw slices (quotes kept, so callers can tell `"x"` from `x`).

use super::bytes;

/// One parameter: `name` and, when an `=` was present, its trimmed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Iterates parameters of a raw `;a=1;b;c="x;y"` slice (leading `;` optional).
#[derive(Debug, Clone)]
pub struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Params { rest: raw }
    }

    /// The first parameter with this name (case-insensitive). `Some(None)` means
    /// present without a value, like `;lr` or `;rport`.
    pub fn get(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.clone()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value)
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        loop {
            let rest = bytes::trim_start(self.rest);
            if rest.is_empty() {
                self.rest = rest;
                return None;
            }
            let rest = rest.strip_prefix(b";").unwrap_or(rest);
            let end = bytes::find_unquoted(rest, b';').unwrap_or(rest.len());
            let item = &rest[..end];
            self.rest = &rest[end..];
            let item = bytes::trim(item);
            if item.is_empty() {
                // `;;` — nothing between separators; skip it.
                continue;
            }
            let (name, value) = match bytes::find(b'=', item) {
                Some(eq) => (bytes::trim(&item[..eq]), Some(bytes::trim(&item[eq + 1..]))),
                None => (item, None),
            };
            return Some(Param { name, value });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_values_quotes_and_folds() {
        let p: Vec<_> = Params::new(b";rport;branch=z9hG4bK1 ; x = \"a;b\" ;\r\n  lr").collect();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0],
            Param {
                name: b"rport",
                value: None
            }
        );
        assert_eq!(p[1].value, Some(&b"z9hG4bK1"[..]));
        assert_eq!(
            p[2],
            Param {
                name: b"x",
                value: Some(b"\"a;b\"")
            }
        );
        assert_eq!(p[3].name, b"lr");
        assert_eq!(
            Params::new(b";Branch=1").get(b"branch"),
            Some(Some(&b"1"[..]))
        );
        assert_eq!(Params::new(b";lr").get(b"lr"), Some(None));
        assert_eq!(Params::new(b";lr").get(b"x"), None);
        assert_eq!(Params::new(b";;;").count(), 0);
    }
}
