//! The normaliser never panics, and every offset it reports is a character boundary of the
//! original, moving forward, with the end of the view at the end of the original.
#![no_main]

use enclave_policy::normalize::View;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let v = View::new(s);
    let t = v.as_str();
    let mut last = 0;
    for (i, _) in t.char_indices().chain(std::iter::once((t.len(), ' '))) {
        let a = v.start_in_original(i);
        let b = v.end_in_original(i);
        assert!(s.is_char_boundary(a) && s.is_char_boundary(b));
        assert!(a >= last && b >= a);
        last = a;
    }
    assert_eq!(v.end_in_original(t.len()), s.len());
});
