//! A log source's character encoding, and turning a record's bytes into UTF-8 text. Pure.
//!
//! Names are WHATWG labels (`encoding_rs::Encoding::for_label`): `utf-8`/`utf8` (the
//! default), `gbk`, `gb2312` (WHATWG reads both as GBK), `gb18030`, and the other
//! ASCII-compatible ones (`shift_jis`, `euc-kr`, `big5`, `windows-1252`, ...). WHATWG's GBK
//! decoder is its gb18030 decoder (GB18030-2022), so all three Chinese names read
//! four-byte sequences too.
//!
//! The tailer cuts lines at the byte 0x0A before anything is decoded. That is right for
//! every ASCII-compatible encoding, where a byte below 0x80 only ever stands for itself:
//! a GBK/GB18030 character's second byte is 0x40–0xFE and a four-byte one's are
//! 0x30–0x39 or 0x81–0xFE, never 0x0A. UTF-16 is not like that (上, U+4E0A, is `0A 4E` in
//! UTF-16LE), nor is ISO-2022-JP, whose escape sequences carry a state across lines: they
//! are refused.
//!
//! Severity and timestamps are read from the raw bytes, where ASCII words and digits are
//! the same in every accepted encoding. The one blind spot: a character whose second byte
//! is an ASCII letter, written right against a keyword, joins it into one word. GB2312's
//! characters never do (both bytes are 0xA1–0xFE); GBK's extension, Shift_JIS and Big5 can.

use encoding_rs::Encoding;
use std::borrow::Cow;

/// What `encoding` accepts, for error messages.
const ACCEPTED: &str = "use utf-8 (the default), gbk, gb18030, gb2312, \
     or another ASCII-compatible WHATWG label such as shift_jis, euc-kr, big5 or windows-1252";

/// A source's encoding, known to be ASCII-compatible (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineEncoding(&'static Encoding);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error("unknown encoding: {ACCEPTED}")]
    Unknown,
    #[error(
        "{0} is not supported: lines are split at the byte 0x0A before decoding, which is \
         only safe in ASCII-compatible encodings (in UTF-16 0x0A is also half of characters \
         such as 上, U+4E0A; ISO-2022-JP carries its state across lines); {ACCEPTED}"
    )]
    NotAsciiCompatible(&'static str),
    /// Labels such as iso-2022-kr and hz-gb-2312, which WHATWG decodes to a single U+FFFD.
    #[error(
        "WHATWG maps this label to its replacement encoding, which decodes nothing: {ACCEPTED}"
    )]
    Replacement,
}

impl Default for LineEncoding {
    fn default() -> Self {
        LineEncoding(encoding_rs::UTF_8)
    }
}

impl LineEncoding {
    /// The encoding a WHATWG label names (case and surrounding spaces ignored).
    pub fn for_label(label: &str) -> Result<Self, EncodingError> {
        let e = Encoding::for_label(label.as_bytes()).ok_or(EncodingError::Unknown)?;
        if e == encoding_rs::REPLACEMENT {
            Err(EncodingError::Replacement)
        } else if !e.is_ascii_compatible() {
            Err(EncodingError::NotAsciiCompatible(e.name()))
        } else {
            Ok(LineEncoding(e))
        }
    }

    /// The canonical name: `UTF-8`, `GBK`, `gb18030`, `Shift_JIS`...
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// A record's bytes as UTF-8 text. Malformed bytes become U+FFFD: a line is never
    /// dropped. Valid UTF-8 in a UTF-8 source, and ASCII in any source, is borrowed as is.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        if self.0 == encoding_rs::UTF_8 {
            // One validation pass and no copy for valid UTF-8. `from_utf8` first: its
            // validation skips ASCII a word at a time, the lossy scan goes byte by byte.
            return match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(bytes),
            };
        }
        // Without BOM handling: a GBK line that begins with the bytes EF BB BF is still GBK.
        self.0.decode_without_bom_handling(bytes).0
    }

    /// As [`decode`](Self::decode), taking the bytes: valid UTF-8 becomes the `String`
    /// without a copy.
    pub fn decode_owned(self, bytes: Vec<u8>) -> String {
        if self.0 == encoding_rs::UTF_8 {
            return String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        }
        self.decode(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(label: &str) -> LineEncoding {
        LineEncoding::for_label(label).unwrap()
    }

    fn gbk(text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
        assert!(!unmappable, "{text} has characters GBK cannot encode");
        bytes.into_owned()
    }

    #[test]
    fn labels() {
        for (label, name) in [
            ("utf-8", "UTF-8"),
            ("UTF8", "UTF-8"),
            (" utf-8 ", "UTF-8"),
            ("gbk", "GBK"),
            ("GB2312", "GBK"),
            ("gb18030", "gb18030"),
            ("shift_jis", "Shift_JIS"),
            ("latin1", "windows-1252"),
        ] {
            assert_eq!(enc(label).name(), name, "{label}");
        }
        assert_eq!(LineEncoding::default(), enc("utf-8"));

        for label in ["utf-16", "UTF-16LE", "utf-16be", "ucs-2", "iso-2022-jp"] {
            let e = LineEncoding::for_label(label).unwrap_err();
            assert!(matches!(e, EncodingError::NotAsciiCompatible(_)), "{label}");
            let msg = e.to_string();
            assert!(msg.contains("0x0A") && msg.contains("gb18030"), "{msg}");
        }
        for label in ["hz-gb-2312", "iso-2022-kr"] {
            assert_eq!(
                LineEncoding::for_label(label),
                Err(EncodingError::Replacement)
            );
        }
        for label in ["", "utf-9", "ebcdic", "gbk2"] {
            let e = LineEncoding::for_label(label).unwrap_err();
            assert_eq!(e, EncodingError::Unknown, "{label}");
            assert!(e.to_string().contains("utf-8 (the default), gbk"), "{e}");
        }
    }

    #[test]
    fn utf8_is_borrowed_when_valid_and_replaced_when_not() {
        let u = LineEncoding::default();
        assert!(matches!(
            u.decode("数据库 ok".as_bytes()),
            Cow::Borrowed("数据库 ok")
        ));
        assert_eq!(u.decode(b"bad \xff end"), "bad \u{fffd} end");
        // GBK bytes read as UTF-8 are garbage but never an error or a lost line.
        assert!(u.decode(&gbk("数据库")).contains('\u{fffd}'));
    }

    #[test]
    fn gbk_and_gb18030_decode_chinese() {
        let text = "2026-11-22 10:00:01 ERROR 数据库连接失败";
        for label in ["gbk", "gb2312", "gb18030"] {
            assert_eq!(enc(label).decode(&gbk(text)), text, "{label}");
        }
        // ASCII needs no copy in any ASCII-compatible encoding.
        assert!(matches!(
            enc("gbk").decode(b"plain"),
            Cow::Borrowed("plain")
        ));
        // A leading EF BB BF is not taken as a UTF-8 byte order mark in a GBK source.
        assert_eq!(enc("gbk").decode(b"\xef\xbb\xbfok"), "锘縪k");
        // WHATWG's GBK has the euro sign at 0x80, as Windows' code page 936 does.
        assert_eq!(enc("gbk").decode(b"\x80"), "€");
    }

    #[test]
    fn gb18030_four_byte_sequences_round_trip() {
        // Both outside the BMP: an emoji and the first CJK extension B character.
        let text = "告警 😀 𠀀";
        let (bytes, _, unmappable) = encoding_rs::GB18030.encode(text);
        assert!(!unmappable);
        assert_eq!(&bytes[5..9], b"\x94\x39\xfc\x36", "😀 is four bytes");
        assert_eq!(&bytes[10..], b"\x95\x32\x82\x36");
        for label in ["gb18030", "gbk"] {
            assert_eq!(enc(label).decode(&bytes), text, "{label}");
        }
    }

    #[test]
    fn malformed_bytes_are_replaced_never_dropped() {
        let g = enc("gbk");
        // A lead byte at the end of a line (a line cut mid-character), a lead byte before
        // ASCII, and 0xFF, which leads nothing.
        assert_eq!(g.decode(b"ok \xd6"), "ok \u{fffd}");
        assert_eq!(g.decode(b"\xd6 x"), "\u{fffd} x");
        assert_eq!(g.decode(b"a\xffb"), "a\u{fffd}b");
        let mut bytes = gbk("失败");
        bytes.push(0xff);
        bytes.extend(gbk("重试"));
        assert_eq!(g.decode(&bytes), "失败\u{fffd}重试");
    }

    #[test]
    fn splitting_on_newlines_before_decoding_is_the_same_as_after() {
        // Every two-byte code (lead 0x81–0xFE, trail 0x40–0xFE but 0x7F): one line of 190
        // characters per lead byte, then a line of four-byte ones.
        let mut bytes = Vec::new();
        for lead in 0x81..=0xfeu8 {
            for trail in (0x40..=0xfeu8).filter(|&t| t != 0x7f) {
                bytes.extend([lead, trail]);
            }
            bytes.push(b'\n');
        }
        bytes.extend(encoding_rs::GB18030.encode("😀𠀀\u{80}").0.iter());
        bytes.push(b'\n');
        for label in ["gbk", "gb18030"] {
            let e = enc(label);
            let whole = e.decode(&bytes);
            let lines: Vec<_> = bytes.split(|&b| b == b'\n').map(|l| e.decode(l)).collect();
            assert_eq!(lines, whole.split('\n').collect::<Vec<_>>(), "{label}");
            assert_eq!(lines.len(), 126 + 2);
            assert!(lines[..126].iter().all(|l| l.chars().count() == 190));
            assert_eq!(lines[126], "😀𠀀\u{80}");
            assert!(!whole.contains('\u{fffd}'));
        }
    }

    /// `cargo test -p aftercare-agent --lib decode_speed -- --ignored --nocapture`; a figure
    /// to print, not a bound to assert (the machine is shared).
    #[test]
    #[ignore]
    fn decode_speed() {
        let text = format!(
            "2026-11-22 10:00:01 ERROR [pool-13] {}",
            "数据库连接失败，正在重试。".repeat(7)
        );
        let gbk_line = gbk(&text)[..200].to_vec();
        let utf8_line = text.as_bytes()[..text.floor_char_boundary(200)].to_vec();
        let ascii_line = b"x".repeat(200);
        let n = 200_000;
        for (label, what, bytes) in [
            ("gbk", "GBK Chinese", &gbk_line),
            ("utf-8", "UTF-8 Chinese", &utf8_line),
            ("gbk", "ASCII", &ascii_line),
        ] {
            let e = enc(label);
            let t = std::time::Instant::now();
            let mut out = 0;
            for _ in 0..n {
                let s = e.decode(std::hint::black_box(bytes)).into_owned();
                out += std::hint::black_box(s).len();
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "{label} decoding {what}, 200-byte lines: {:.0} ns/line, {:.0} MB/s in ({out} bytes out)",
                s * 1e9 / n as f64,
                (n * bytes.len()) as f64 / s / 1e6
            );
        }
    }
}
