//! Any body sent to `POST /mutate`: an answer or a review error, never a panic; an answer is
//! always a JSON AdmissionReview response.
#![no_main]

use injector::{options::InjectorOptions, review::review};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(outcome) = review(body, &InjectorOptions::default()) {
        let answer: serde_json::Value =
            serde_json::from_slice(&outcome.body).expect("the response is JSON");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert!(answer["response"]["allowed"].is_boolean());
    }
});
