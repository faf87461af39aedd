//! Any input to any scheme's parser yields a label or an error, never a panic; a label it
//! yields prints back to itself.

#![no_main]

use enclave_label::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in Scheme::BUILTIN {
        let Some(scheme) = Scheme::builtin(name) else {
            continue;
        };
        match scheme.parse(text) {
            Ok(label) => {
                let banner = scheme.banner(&label);
                assert_eq!(scheme.parse(&banner).ok(), Some(label.clone()), "{banner}");
                assert_eq!(scheme.parse(&scheme.portion(&label)).ok(), Some(label));
            }
            Err(e) => assert!(e.column >= 1 && e.column <= text.chars().count() + 1),
        }
    }
});
