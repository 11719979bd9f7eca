//! Pages of a list: `?limit=N&cursor=...` in, `{"items": [...], "next_cursor": ...}` out
//! (pure).
//!
//! A cursor is opaque to callers: base64url of `kind:position:check`, where `check` is a
//! hash of the rest, so a cursor of another list, a truncated one or an edited one is
//! refused (`bad_cursor`) instead of silently paging from somewhere else. It names a
//! position (the last item's key), never an offset, so items added while someone pages do
//! not shift what follows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What is wrong with a page request, naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("limit: {0}")]
    Limit(String),
    #[error("cursor: not a cursor of this list; start again without `cursor`")]
    Cursor,
}

/// The page size asked for: `default` when absent, 1..=`max` otherwise.
pub fn limit(asked: Option<usize>, default: usize, max: usize) -> Result<usize, PageError> {
    match asked {
        None => Ok(default),
        Some(0) => Err(PageError::Limit(format!("must be 1 to {max}"))),
        Some(n) if n > max => Err(PageError::Limit(format!("{n} is over the maximum {max}"))),
        Some(n) => Ok(n),
    }
}

fn check(kind: &str, position: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("aftercare-cursor\0{kind}\0{position}").as_bytes(),
    );
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A cursor for the list `kind` positioned after `position`.
pub fn encode(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}:{}", check(kind, position)))
}

/// The position a cursor of list `kind` names.
pub fn decode(kind: &str, cursor: &str) -> Result<String, PageError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| PageError::Cursor)?;
    let text = String::from_utf8(bytes).map_err(|_| PageError::Cursor)?;
    let rest = text
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or(PageError::Cursor)?;
    let (position, sum) = rest.rsplit_once(':').ok_or(PageError::Cursor)?;
    if sum != check(kind, position) {
        return Err(PageError::Cursor);
    }
    Ok(position.to_string())
}

/// Take one page of `items` (sorted by `key`, ascending and unique) after the cursor
/// `cursor` of list `kind` (`None`: from the start). Returns the page and the next cursor,
/// if more follow.
pub fn take<T, K>(
    kind: &str,
    items: Vec<T>,
    cursor: Option<&str>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Result<(Vec<T>, Option<String>), PageError>
where
    K: Ord + serde::Serialize + serde::de::DeserializeOwned,
{
    let mut rest: Vec<T> = match cursor {
        Some(c) => {
            let after: K =
                serde_json::from_str(&decode(kind, c)?).map_err(|_| PageError::Cursor)?;
            items.into_iter().filter(|t| key(t) > after).collect()
        }
        None => items,
    };
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = match rest.last() {
        Some(t) if more => Some(encode(
            kind,
            &serde_json::to_string(&key(t)).unwrap_or_default(),
        )),
        _ => None,
    };
    Ok((rest, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_refuses_edits_and_other_lists() {
        let c = encode("hosts", "acme/db1");
        assert_eq!(decode("hosts", &c).unwrap(), "acme/db1");
        assert_eq!(decode("findings", &c), Err(PageError::Cursor));
        assert_eq!(decode("hosts", "not base64 !"), Err(PageError::Cursor));
        let forged = URL_SAFE_NO_PAD.encode("hosts:acme/db2:000000000000");
        assert_eq!(decode("hosts", &forged), Err(PageError::Cursor));
        let mut edited = c.clone();
        edited.pop();
        assert_eq!(decode("hosts", &edited), Err(PageError::Cursor));
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(limit(None, 50, 500), Ok(50));
        assert_eq!(limit(Some(500), 50, 500), Ok(500));
        assert!(
            limit(Some(0), 50, 500)
                .unwrap_err()
                .to_string()
                .starts_with("limit")
        );
        assert!(limit(Some(501), 50, 500).is_err());
    }

    #[test]
    fn pages_cover_the_list_once() {
        let items: Vec<(u32, String)> = (0..7).map(|n| (n, format!("h{n}"))).collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) =
                take("n", items.clone(), cursor.as_deref(), 3, |t| t.clone()).unwrap();
            seen.extend(page);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, items);
        // A cursor naming a key of another type is refused, not misread.
        let other = encode("n", "\"text\"");
        assert!(take("n", items, Some(&other), 3, |t| t.clone()).is_err());
    }
}
