//! Labels of a series: reading the canonical `k=v,k2=v2` string back, selecting series by
//! label, and naming a finding's subject.

use super::config::Selector;
use aftercare_shared::model::labels;
use std::borrow::Cow;

/// The pairs of a canonical label string (as `aftercare_shared::model::labels` writes it),
/// values unescaped.
pub fn pairs(s: &str) -> Vec<(&str, Cow<'_, str>)> {
    let mut out = Vec::new();
    if s.is_empty() {
        return out;
    }
    let b = s.as_bytes();
    let (mut start, mut i, mut escaped) = (0, 0, false);
    loop {
        if i >= b.len() || b[i] == b',' {
            let part = &s[start..i.min(b.len())];
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            out.push((
                k,
                if escaped {
                    unescape(v)
                } else {
                    Cow::Borrowed(v)
                },
            ));
            if i >= b.len() {
                return out;
            }
            start = i + 1;
            escaped = false;
            i += 1;
        } else if b[i] == b'\\' {
            escaped = true;
            i += 2;
        } else {
            i += 1;
        }
    }
}

fn unescape(v: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The value of `key`, or "" when the series has no such label.
pub fn value<'a>(pairs: &'a [(&str, Cow<'_, str>)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| v.as_ref())
}

/// Whether a series with these labels is one the selector reads.
pub fn selected(sel: &Selector, pairs: &[(&str, Cow<'_, str>)]) -> bool {
    sel.matches
        .iter()
        .all(|m| m.regex.is_match(value(pairs, &m.label)))
        && !sel
            .excludes
            .iter()
            .any(|m| m.regex.is_match(value(pairs, &m.label)))
}

/// The subject of a series: its labels named by the selector's `subject`, canonical
/// (`mount=/var`); all of them when the selector names none.
pub fn subject(sel: &Selector, all: &str, pairs: &[(&str, Cow<'_, str>)]) -> String {
    if sel.subject.is_empty() {
        return all.to_string();
    }
    let picked: Vec<(&str, &str)> = sel
        .subject
        .iter()
        .filter_map(|k| {
            pairs
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(pk, v)| (*pk, v.as_ref()))
        })
        .collect();
    labels(&picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_read_back_what_labels_wrote() {
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("mount", "/")],
            &[("device", "sda1"), ("fstype", "ext4"), ("mount", "/var")],
            &[("mount", "/a,b=c\\d"), ("x", "")],
        ];
        for want in cases {
            let s = labels(want);
            let got: Vec<(&str, String)> = pairs(&s)
                .into_iter()
                .map(|(k, v)| (k, v.into_owned()))
                .collect();
            let mut want: Vec<(&str, String)> =
                want.iter().map(|(k, v)| (*k, v.to_string())).collect();
            want.sort();
            assert_eq!(got, want, "{s}");
        }
    }

    #[test]
    fn absent_labels_read_as_empty() {
        let p = pairs("core=3");
        assert_eq!(value(&p, "core"), "3");
        assert_eq!(value(&p, "mount"), "");
    }
}
