//! The checks that confirm a personal-data candidate on its span alone: ISO 13616 for IBANs,
//! Luhn and issuer prefixes for cards, SSN ranges, the German tax id's ISO 7064 digit, ICAO 9303
//! check digits for identity documents, and the words that must stand before a bare number.

/// The length of the longest prefix of `s`, ending at a group boundary, that `valid` accepts.
pub(crate) fn longest_valid(s: &str, valid: fn(&str) -> bool) -> Option<usize> {
    if valid(s) {
        return Some(s.len());
    }
    let mut cut = s;
    while let Some(at) = cut.rfind([' ', '-']) {
        cut = &cut[..at];
        if valid(cut) {
            return Some(cut.len());
        }
    }
    None
}

/// The first `N` bytes of `s` that `keep` maps to `Some`, on the stack, and how many there were
/// in all (more than `N` means the text is too long for what is checked). Confirmation runs for
/// thousands of candidates a text; a heap allocation each cost more than the check.
fn gather<const N: usize>(s: &str, keep: impl Fn(u8) -> Option<u8>) -> ([u8; N], usize) {
    let mut out = [0u8; N];
    let mut n = 0;
    for v in s.bytes().filter_map(keep) {
        if let Some(slot) = out.get_mut(n) {
            *slot = v;
        }
        n += 1;
    }
    (out, n)
}

/// The digits of `s` as values when there are at most `N` of them.
fn digits<const N: usize>(s: &str) -> Option<([u8; N], usize)> {
    let (d, n) = gather::<N>(s, |b| b.is_ascii_digit().then(|| b - b'0'));
    (n <= N).then_some((d, n))
}

/// ISO 13616: country length and mod-97 over the rearranged characters.
pub fn iban_valid(s: &str) -> bool {
    let (compact, n) = gather::<34>(s, |b| (b != b' ').then_some(b));
    if !(15..=34).contains(&n) {
        return false;
    }
    let compact = &compact[..n];
    if let Some(expected) = iban_length(&compact[..2])
        && compact.len() != expected
    {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem: u32 = 0;
    for &b in rearranged {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// IBAN lengths of the countries most often seen here; others are checked by mod-97 alone.
fn iban_length(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"DE" => 22,
        b"AT" => 20,
        b"BE" => 16,
        b"CH" | b"LI" => 21,
        b"ES" | b"SE" => 24,
        b"FR" | b"IT" | b"MC" => 27,
        b"GB" | b"IE" => 22,
        b"NL" => 18,
        b"PL" => 28,
        b"LU" => 20,
        b"DK" | b"FI" => 18,
        b"NO" => 15,
        b"PT" => 25,
        _ => return None,
    })
}

/// Luhn, a card length, and an issuer prefix (Visa, Mastercard, Maestro, Amex, Discover, JCB,
/// Diners).
pub fn card_valid(s: &str) -> bool {
    let Some((d, n)) = digits::<19>(s) else {
        return false;
    };
    let d = &d[..n];
    if !(12..=19).contains(&d.len()) {
        return false;
    }
    let prefix = |n: usize| d.iter().take(n).fold(0u32, |a, x| a * 10 + u32::from(*x));
    let len = d.len();
    // Maestro: 12 to 19 digits.
    let maestro = matches!(
        prefix(4),
        5018 | 5020 | 5038 | 6304 | 6759 | 6761..=6763 | 604 | 6390
    ) || (56..=58).contains(&prefix(2));
    let issuer = maestro
        || match d.first() {
            Some(4) => matches!(len, 13 | 16 | 19),
            Some(5) => (51..=55).contains(&prefix(2)) && len == 16,
            Some(2) if prefix(4) == 2131 => len == 15,
            Some(2) => (2221..=2720).contains(&prefix(4)) && len == 16,
            Some(1) => prefix(4) == 1800 && len == 15,
            Some(3) if matches!(prefix(2), 34 | 37) => len == 15,
            // JCB is 3528-3589; generators (and some issuers' test ranges) use all of 35xx.
            Some(3) if prefix(2) == 35 => len >= 16,
            Some(3) => {
                (matches!(prefix(2), 36 | 38 | 39) || (300..=305).contains(&prefix(3))) && len >= 14
            }
            Some(6) => {
                (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)))
                    && len >= 16
            }
            _ => false,
        };
    issuer && luhn(d)
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn ssn_valid(s: &str) -> bool {
    let Some((d, 9)) = digits::<9>(s) else {
        return false;
    };
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial: u32 = d[5..].iter().fold(0, |a, x| a * 10 + u32::from(*x));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// German Steuerliche Identifikationsnummer: 11 digits, no leading zero, in the first ten one digit
/// appears twice or three times and the rest at most once, and an ISO 7064 MOD 11,10 check digit.
pub fn de_tax_id_valid(s: &str) -> bool {
    let Some((d, 11)) = digits::<11>(s) else {
        return false;
    };
    if d[0] == 0 {
        return false;
    }
    let mut counts = [0u8; 10];
    for &x in &d[..10] {
        counts[usize::from(x)] += 1;
    }
    let repeated = counts.iter().filter(|&&c| c >= 2).count();
    if repeated != 1 || counts.iter().any(|&c| c > 3) {
        return false;
    }
    let mut product: u32 = 10;
    for &x in &d[..10] {
        let mut sum = (u32::from(x) + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (sum * 2) % 11;
    }
    let check = (11 - product) % 10;
    check == u32::from(d[10])
}

/// German identity card and passport serial numbers (nine characters of a restricted alphabet).
/// Accepted when they carry a valid 7-3-1 check digit, or when the text just before names the
/// document; a bare nine-character code is too common in administrative text to count alone.
pub(crate) fn document_valid(s: &str, before: &str, words: &Words) -> bool {
    if !s.bytes().any(|b| b.is_ascii_digit()) {
        return false;
    }
    if s.len() == 10 && check_731(s) {
        return true;
    }
    // Substrings, not word starts: German compounds (`Personalausweisnummer`) name the document.
    words.in_text(preceding(before, before.len(), 80))
}

/// Words that name the document a number belongs to.
pub(crate) const DOCUMENT_WORDS: [&str; 9] = [
    "ausweis",
    "reisepass",
    "passnummer",
    "pass-nr",
    "pass nr",
    "passport",
    "id card",
    "identity card",
    "dokumentennummer",
];

/// A set of ASCII words looked for in any case, all at once (one Aho-Corasick automaton): the
/// context checks run for every candidate number, and a search per word was most of their cost.
#[derive(Debug, Clone)]
pub(crate) struct Words(aho_corasick::AhoCorasick);

impl Words {
    pub(crate) fn new(words: &[&str]) -> Result<Self, aho_corasick::BuildError> {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(words)
            .map(Self)
    }

    /// Whether `text` holds one of the words anywhere.
    pub(crate) fn in_text(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// Whether `text` has a word starting with one of the words (`tel` in `Tel.`, `Telefon`, not
    /// in `Hotel` or `Bestellung`).
    pub(crate) fn starts_a_word(&self, text: &str) -> bool {
        self.0.find_overlapping_iter(text).any(|m| {
            text[..m.start()]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric())
        })
    }
}

/// ICAO 9303 check digit (weights 7, 3, 1) over the first nine characters, compared to the tenth.
pub(crate) fn check_731(s: &str) -> bool {
    let b = s.as_bytes();
    let value = |c: u8| match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A'..=b'Z' => u32::from(c - b'A') + 10,
        _ => 0,
    };
    let sum: u32 = b[..9]
        .iter()
        .enumerate()
        .map(|(i, &c)| value(c) * [7, 3, 1][i % 3])
        .sum();
    u32::from(b[9].wrapping_sub(b'0')) == sum % 10
}

/// Up to `n` bytes of `text` before `at`, cut at a character boundary.
pub(crate) fn preceding(text: &str, at: usize, n: usize) -> &str {
    let from = at.saturating_sub(n);
    let from = (from..at).find(|i| text.is_char_boundary(*i)).unwrap_or(at);
    text.get(from..at).unwrap_or_default()
}
