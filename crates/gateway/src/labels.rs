//! Labels on the wire: the `Enclave-Label` header a caller declares its request's label in and
//! an answer carries its label in (percent-encoded where a banner is not ASCII).

use axum::http::{HeaderMap, HeaderValue};
use enclave_service::monitor::Declared;
use serde_json::Value;

use crate::error::Error;

/// The header a caller declares its request label in, and the answer carries its label in.
pub const LABEL_HEADER: &str = "enclave-label";

/// A header value for a banner: non-ASCII bytes (`FÜR`) are percent-encoded, since header values
/// are ASCII.
pub fn header_value(banner: &str) -> HeaderValue {
    let mut out = String::with_capacity(banner.len());
    for b in banner.bytes() {
        if b.is_ascii_graphic() || b == b' ' {
            if b == b'%' {
                out.push_str("%25");
            } else {
                out.push(char::from(b));
            }
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Reverses [`header_value`]'s encoding on a declared label.
pub fn decode_header(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The label a request declares: the `Enclave-Label` header, else `metadata.enclave_label`.
pub fn declared(headers: &HeaderMap, metadata: Option<&Value>) -> Result<Option<Declared>, Error> {
    if let Some(v) = headers.get(LABEL_HEADER) {
        let text = decode_header(v.as_bytes()).ok_or_else(|| Error::InvalidLabel {
            param: "Enclave-Label".into(),
            message: "the `Enclave-Label` header is not valid UTF-8 or has a broken %-escape"
                .into(),
        })?;
        return Ok(Some(Declared {
            source: "Enclave-Label",
            text,
        }));
    }
    Declared::from_metadata(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip_non_ascii() {
        let banner = "VS-NUR FÜR DEN DIENSTGEBRAUCH";
        let v = header_value(banner);
        assert_eq!(v.to_str().unwrap(), "VS-NUR F%C3%9CR DEN DIENSTGEBRAUCH");
        assert_eq!(decode_header(v.as_bytes()).unwrap(), banner);
        assert_eq!(decode_header(b"S//NF").unwrap(), "S//NF");
        assert_eq!(decode_header(b"50%").unwrap(), "50%");
    }
}
