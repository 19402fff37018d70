//! Any bytes as a template: the loader must answer (a plan or an error),
//! never panic, keep its output bounded, name a place in every error and
//! never let a control character from the input through.

#![no_main]

use std::path::Path;

use kiln::template::{Overrides, TemplateError, load_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let result = load_bytes(Path::new("/fuzz/template.json"), data, &Overrides::default());
    match result {
        Ok(plan) => {
            // 64 MiB of rendering in all, plus the input's own text per build.
            let size = format!("{plan:?}").len();
            assert!(size <= (64 << 20) + 64 * data.len() + 4096, "a plan of {size} bytes");
        }
        Err(e) => {
            match &e {
                TemplateError::Invalid { problems, .. } => {
                    assert!(!problems.is_empty());
                    for p in problems {
                        assert!(!p.path.is_empty() && !p.message.is_empty(), "{p:?}");
                    }
                }
                TemplateError::Json { line, column, .. } => assert!(*line >= 1 && *column >= 1),
                TemplateError::Decode { location, .. } => assert!(!location.is_empty()),
                TemplateError::Read { .. } => panic!("nothing is read from disk: {e}"),
            }
            let shown = kiln::error::error_chain(&e);
            assert!(shown.len() <= 1 << 20, "an error of {} bytes", shown.len());
            assert!(
                shown.chars().all(|c| c == '\n' || !c.is_control()),
                "a raw control character in {shown:?}"
            );
        }
    }
});
