//! The text inspection reads: look-alike spellings folded together, with a map back to the
//! original's byte offsets.
//!
//! A marking must be seen however it is spelled. Before inspection, a [`View`] of the text:
//! - decodes HTML character references (`&#83;`, `&#x53;`, `&lpar;`, `&amp;#83;` twice over);
//! - drops zero-width, bidirectional and other invisible format characters (U+200B, U+202E,
//!   U+2060, U+FEFF, soft hyphens, tag characters, variation selectors);
//! - applies NFKC to each character (full-width `（Ｓ）` is `(S)`, ligatures split), then folds
//!   every dash and hyphen to `-` and every space to ` `;
//! - folds look-alike letters from Cyrillic, Greek, Armenian, Cherokee and the phonetic blocks to
//!   the ASCII letter they are confusable with (their UTS #39 skeleton, when that is one ASCII
//!   character), so a Cyrillic `Ѕ` reads as `S`.
//!
//! Case and white space inside marks are left to the patterns (which match either). The original
//! text is never changed: what is sent on or stored is what the caller gave; findings come back
//! as byte ranges of the original through [`View::start_in_original`] and
//! [`View::end_in_original`]. Text that is ASCII with no `&` (nearly all of it) is viewed as it
//! is, without a copy.
//!
//! Hand-written, over `unicode-normalization` (NFKC), `unicode-security` (skeletons) and
//! `html-escape` (the entity table): no crate keeps offsets through these transformations.

use std::borrow::Cow;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

/// A text as inspection reads it.
#[derive(Debug, Clone)]
pub struct View<'a> {
    original: &'a str,
    text: Cow<'a, str>,
    /// `(view offset, original offset)` at both ends of every changed stretch, in order. Between
    /// two anchors that bracket unchanged text, offsets move together.
    anchors: Vec<(usize, usize)>,
}

/// The longest HTML character reference looked at (`&CounterClockwiseContourIntegral;` is 33).
const MAX_ENTITY: usize = 40;

impl<'a> View<'a> {
    pub fn new(original: &'a str) -> Self {
        // The vector pass settles nearly all text; the byte loop in `unchanged` is only for
        // what it leaves.
        if plain_ascii(original.as_bytes()) || unchanged(original, 0) == original.len() {
            return Self {
                original,
                text: Cow::Borrowed(original),
                anchors: Vec::new(),
            };
        }
        let mut text = String::with_capacity(original.len());
        let mut anchors = Vec::new();
        let bytes = original.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            // Copy the next run of characters that read as themselves in one go.
            let stop = unchanged(original, at);
            text.push_str(&original[at..stop]);
            at = stop;
            if at >= bytes.len() {
                break;
            }
            let (consumed, out) = if bytes[at] == b'&' {
                match entity(&original[at..]) {
                    Some((len, decoded)) => (len, fold_str(&decoded)),
                    None => (1, None),
                }
            } else {
                let c = original[at..].chars().next().unwrap_or('\u{FFFD}');
                (c.len_utf8(), fold_char(c))
            };
            match out {
                // Unchanged: copy, no anchor.
                None => text.push_str(&original[at..at + consumed]),
                Some(folded) => {
                    anchors.push((text.len(), at));
                    text.push_str(&folded);
                    anchors.push((text.len(), at + consumed));
                }
            }
            at += consumed;
        }
        Self {
            original,
            text: Cow::Owned(text),
            anchors,
        }
    }

    /// The text to inspect.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The original's offset of a view offset that starts a finding: the start of whatever
    /// original characters produced it.
    pub fn start_in_original(&self, view: usize) -> usize {
        let (orig, inside) = self.map(view);
        let mut o = orig.min(self.original.len());
        if inside {
            // A finding that starts inside a folded stretch takes the whole stretch.
            o = self.anchor_before(view).1;
        }
        while o > 0 && !self.original.is_char_boundary(o) {
            o -= 1;
        }
        o
    }

    /// The original's offset of a view offset that ends a finding: the end of whatever original
    /// characters produced the last byte in it.
    pub fn end_in_original(&self, view: usize) -> usize {
        let (orig, inside) = self.map(view);
        let mut o = orig.min(self.original.len());
        if inside {
            o = self.anchor_after(view).map_or(self.original.len(), |a| a.1);
        }
        while o < self.original.len() && !self.original.is_char_boundary(o) {
            o += 1;
        }
        o
    }

    /// The original offset for `view`, and whether `view` falls strictly inside a folded stretch.
    fn map(&self, view: usize) -> (usize, bool) {
        let i = self.anchors.partition_point(|a| a.0 <= view);
        if i == 0 {
            return (view, false);
        }
        let (v, o) = self.anchors[i - 1];
        // Anchors come in pairs: an odd count before `view` means it is past a stretch's start
        // and before its end.
        let inside = i % 2 == 1 && view > v;
        (
            o + (view - v),
            inside && self.anchors.get(i).is_some_and(|a| view < a.0),
        )
    }

    fn anchor_before(&self, view: usize) -> (usize, usize) {
        let i = self.anchors.partition_point(|a| a.0 <= view);
        i.checked_sub(1).map_or((0, 0), |i| self.anchors[i])
    }

    fn anchor_after(&self, view: usize) -> Option<(usize, usize)> {
        let i = self.anchors.partition_point(|a| a.0 <= view);
        self.anchors.get(i).copied()
    }
}

/// Whether `bytes` is ASCII with no `&`: text no step of the view changes. One pass, 32 bytes
/// at a time without an early exit inside, so the compiler makes it vector compares on the
/// baseline target (two passes, `is_ascii` and then `memchr`, were a twentieth of inspection).
fn plain_ascii(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        let mut odd = false;
        for &b in chunk {
            odd |= (b >= 0x80) | (b == b'&');
        }
        if odd {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b < 0x80 && b != b'&')
}

/// The end of the run from `at` of characters inspection reads as they are: ASCII but `&`, and
/// every other character that no step changes (`ä`, `ß`, `€`, `„`). Nearly all text, German and
/// French included, is one such run and is inspected without a copy.
fn unchanged(s: &str, at: usize) -> usize {
    let bytes = s.as_bytes();
    let mut i = at;
    // Where the next `&` is (a vector search). Before it, bytes are read eight at a time: a
    // set high bit marks the first non-ASCII byte, and plain ASCII, nearly all text, is passed.
    let amp = memchr::memchr(b'&', &bytes[at..]).map_or(bytes.len(), |n| at + n);
    loop {
        while i + 8 <= amp {
            let Some(word) = bytes
                .get(i..i + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
            else {
                break;
            };
            let high = u64::from_le_bytes(word) & 0x8080_8080_8080_8080;
            if high != 0 {
                i += (high.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else {
            return bytes.len();
        };
        if b < 0x80 {
            if b == b'&' {
                return i;
            }
            i += 1;
            continue;
        }
        // `À`–`ÿ` (lead byte 0xC3), the letters of German and French: no step changes them.
        if b == 0xC3 {
            i += 2;
            continue;
        }
        let Some(c) = s[i..].chars().next() else {
            return i;
        };
        if !stays(c) {
            return i;
        }
        i += c.len_utf8();
    }
}

/// Whether no step of the view changes `c`. For the Basic Multilingual Plane the answer is
/// worked out once per block of 256 characters, on first use: the checks behind it search
/// Unicode tables, and text uses the same few characters over and over.
fn stays(c: char) -> bool {
    static BLOCKS: [OnceLock<[u64; 4]>; 256] = [const { OnceLock::new() }; 256];
    let code = u32::from(c);
    let Some(block) = BLOCKS.get((code >> 8) as usize) else {
        return stays_uncached(c);
    };
    let bits = block.get_or_init(|| {
        let mut bits = [0u64; 4];
        for low in 0..256u32 {
            if char::from_u32((code & !0xFF) | low).is_some_and(stays_uncached) {
                bits[(low / 64) as usize] |= 1 << (low % 64);
            }
        }
        bits
    });
    let low = code & 0xFF;
    (bits[(low / 64) as usize] >> (low % 64)) & 1 == 1
}

/// [`stays`] without the cache: the test [`fold_char`] makes, without building the folded text.
fn stays_uncached(c: char) -> bool {
    // Latin-1 letters, the most common non-ASCII characters here: NFKC leaves them, no
    // skeleton folds them.
    if ('\u{C0}'..='\u{FF}').contains(&c) {
        return true;
    }
    !invisible(c)
        && dash_or_space(c).is_none()
        && unicode_normalization::is_nfkc_quick(std::iter::once(c))
            == unicode_normalization::IsNormalized::Yes
        && confusable(c).is_none()
}

/// Decodes the character reference at the start of `s` (which starts with `&`), repeatedly, so
/// `&amp;#83;` is `S` too. Returns the bytes it spans and what it decodes to.
fn entity(s: &str) -> Option<(usize, String)> {
    // Invisible characters inside a reference (`&#x\u{200B}53;`) are dropped first.
    let mut raw = String::from("&");
    let mut end = None;
    for (i, c) in s.char_indices().skip(1) {
        if i > MAX_ENTITY {
            break;
        }
        if c == ';' {
            end = Some(i);
            break;
        }
        if invisible(c) {
            continue;
        }
        // Look-alike letters spell a name too: `&ѕol;` with a Cyrillic `ѕ`.
        let c = confusable(c).unwrap_or(c);
        if !(c.is_ascii_alphanumeric() || c == '#') {
            return None;
        }
        raw.push(c);
    }
    let end = end.filter(|_| raw.len() >= 2)?;
    raw.push(';');
    let raw = raw.as_str();
    let mut decoded = html_escape::decode_html_entities(raw).into_owned();
    if decoded == raw {
        return None;
    }
    // `&amp;#83;`: the ampersand decoded starts another reference with what follows.
    if decoded == "&" {
        let rest = &s[end + 1..];
        let cut = (0..=rest.len().min(MAX_ENTITY))
            .rev()
            .find(|&i| rest.is_char_boundary(i))
            .unwrap_or(0);
        let again = format!("&{}", &rest[..cut]);
        if let Some((len, inner)) = entity(&again) {
            return Some((end + len, inner));
        }
    }
    // Double (and triple) encoding: what a reader's renderer or a model would decode again.
    for _ in 0..2 {
        if !decoded.contains('&') {
            break;
        }
        let again = html_escape::decode_html_entities(&decoded).into_owned();
        if again == decoded {
            break;
        }
        decoded = again;
    }
    Some((end + 1, decoded))
}

/// `Some(folded)` when inspection must read `c` as something else (possibly nothing).
fn fold_char(c: char) -> Option<String> {
    if invisible(c) {
        return Some(String::new());
    }
    if let Some(d) = dash_or_space(c) {
        return Some(d.to_string());
    }
    // Most characters are their own NFKC form: a table look-up instead of the iterator.
    if unicode_normalization::is_nfkc_quick(std::iter::once(c))
        == unicode_normalization::IsNormalized::Yes
    {
        return confusable(c).map(String::from);
    }
    let mut out = String::new();
    let mut changed = false;
    for n in std::iter::once(c).nfkc() {
        if n != c {
            changed = true;
        }
        if invisible(n) {
            changed = true;
            continue;
        }
        if let Some(d) = dash_or_space(n) {
            changed = true;
            out.push(d);
            continue;
        }
        match confusable(n) {
            Some(a) => {
                changed = true;
                out.push(a);
            }
            None => out.push(n),
        }
    }
    changed.then_some(out)
}

/// Folds every character of a decoded entity; `Some` always (the entity itself is replaced).
fn fold_str(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match fold_char(c) {
            Some(f) => out.push_str(&f),
            None => out.push(c),
        }
    }
    Some(out)
}

/// Characters that show nothing: zero-width, bidirectional controls, soft hyphen, word joiners,
/// variation selectors, tag characters, interlinear annotation marks.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Every dash and hyphen reads as `-`, every space as ` `, so `VS – NfD` is `VS - NfD`.
fn dash_or_space(c: char) -> Option<char> {
    match c {
        '\u{2010}'..='\u{2015}'
        | '\u{2212}'
        | '\u{2E3A}'
        | '\u{2E3B}'
        | '\u{FE58}'
        | '\u{FE63}'
        | '\u{FF0D}'
        | '\u{058A}'
        | '\u{05BE}'
        | '\u{1400}'
        | '\u{1806}'
        | '\u{2E17}'
        | '\u{30A0}' => Some('-'),
        '\u{00A0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200A}'
        | '\u{202F}'
        | '\u{205F}'
        | '\u{3000}' => Some(' '),
        '\u{2028}' | '\u{2029}' | '\u{0085}' => Some('\n'),
        _ => None,
    }
}

/// The one ASCII character that is `c`'s UTS #39 skeleton, if that is what it is.
fn ascii_skeleton(c: char) -> Option<char> {
    let buf = c.to_string();
    let mut sk = unicode_security::skeleton(&buf);
    let first = sk.next()?;
    (sk.next().is_none() && first.is_ascii() && first != c).then_some(first)
}

/// The ASCII character `c` is confusable with (its UTS #39 skeleton), for the scripts whose
/// letters pass for Latin ones.
fn confusable(c: char) -> Option<char> {
    let u = u32::from(c);
    let lookalike_block = matches!(u,
        0x0180..=0x024F // Latin Extended-B
        | 0x0250..=0x02AF // IPA
        | 0x0370..=0x058F // Greek, Cyrillic, Armenian
        | 0x13A0..=0x13FF // Cherokee
        | 0x1D00..=0x1DBF // phonetic extensions
        | 0x2C60..=0x2C7F | 0xA640..=0xA69F | 0xA720..=0xA7FF | 0xAB30..=0xABBF);
    if !lookalike_block {
        return None;
    }
    let Some(first) = ascii_skeleton(c) else {
        // A small letter whose capital passes for Latin (Cyrillic `т`, `Т`) reads as small.
        let mut upper = c.to_uppercase();
        let (Some(u), None) = (upper.next(), upper.next()) else {
            return None;
        };
        return ascii_skeleton(u)
            .filter(char::is_ascii_alphabetic)
            .map(|a| {
                if a == 'l' {
                    'i'
                } else {
                    a.to_ascii_lowercase()
                }
            });
    };
    // Skeletons fold `I` and `l` together as `l`; a capital look-alike (Cyrillic `І`) is `I`.
    Some(if first == 'l' && c.is_uppercase() {
        'I'
    } else {
        first
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(s: &str) -> String {
        View::new(s).as_str().to_string()
    }

    #[test]
    fn look_alikes_fold_to_what_they_look_like() {
        assert_eq!(view("（Ｓ）"), "(S)");
        assert_eq!(view("(S\u{200B})"), "(S)");
        assert_eq!(view("(\u{0405})"), "(S)"); // Cyrillic DZE
        assert_eq!(view("(\u{0422}\u{0405})"), "(TS)"); // Cyrillic TE, DZE
        assert_eq!(view("&#40;S&#41;"), "(S)");
        assert_eq!(view("(&#x53;)"), "(S)");
        assert_eq!(view("&lpar;S&rpar;"), "(S)");
        assert_eq!(view("(&amp;#83;)"), "(S)");
        assert_eq!(view("VS \u{2013} NfD"), "VS - NfD");
        assert_eq!(view("a\u{202E}b\u{00AD}c"), "abc");
        assert_eq!(view("AT&T and R&D"), "AT&T and R&D");
        assert_eq!(view("Straße für Grüße"), "Straße für Grüße");
    }

    #[test]
    fn offsets_map_back_to_the_original() {
        let s = "x （Ｓ） y";
        let v = View::new(s);
        let at = v.as_str().find("(S)").unwrap();
        let (a, b) = (v.start_in_original(at), v.end_in_original(at + "(S)".len()));
        assert_eq!(&s[a..b], "（Ｓ）");
        let s = "pre &#40;S&#41; post";
        let v = View::new(s);
        let at = v.as_str().find("(S)").unwrap();
        assert_eq!(
            &s[v.start_in_original(at)..v.end_in_original(at + 3)],
            "&#40;S&#41;"
        );
    }

    proptest! {
        /// Never panics, and every offset it reports is a character boundary of the original,
        /// in order.
        #[test]
        fn offsets_are_boundaries_in_order(s in "(\\PC|&#?[a-z0-9]{0,6};?|\u{200B}|（|Ѕ){0,40}") {
            let v = View::new(&s);
            let t = v.as_str();
            let mut last = 0;
            for (i, _) in t.char_indices().chain(std::iter::once((t.len(), ' '))) {
                let a = v.start_in_original(i);
                let b = v.end_in_original(i);
                prop_assert!(s.is_char_boundary(a) && s.is_char_boundary(b));
                prop_assert!(a >= last, "starts move forward: {} after {}", a, last);
                prop_assert!(b >= a);
                last = a;
            }
            prop_assert_eq!(v.end_in_original(t.len()), s.len());
        }
    }
}
