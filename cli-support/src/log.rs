//! JSON log lines on stderr.
//!
//! Each line is one JSON object: `ts`, `level`, `msg`, `target`, the process's fixed fields (e.g.
//! the pod's placement, `null` when unknown) and the record's key-values, e.g.
//! `info!(interface = name; "…")`. Filter with `RUST_LOG` (default `info`).

use std::io::Write as _;

use log::kv::{Key, Value, VisitSource};

/// Installs the JSON logger, and a panic hook that logs panics as JSON lines too. `fixed` fields
/// appear on every line, `null` when `None`.
pub fn init(fixed: &[(&'static str, Option<String>)]) {
    let fixed: Vec<(&'static str, String)> = fixed
        .iter()
        .map(|(key, value)| {
            let json = value
                .as_deref()
                .map_or_else(|| "null".to_owned(), json_string);
            (*key, json)
        })
        .collect();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            let mut line = format!(
                r#"{{"ts":"{}","level":"{}","msg":{},"target":{}"#,
                crate::clock::now(),
                record.level(),
                json_string(&record.args().to_string()),
                json_string(record.target()),
            );
            for (key, value) in &fixed {
                push_field(&mut line, key, value);
            }
            let mut fields = Fields(&mut line);
            // A failing visitor only loses fields; the line itself is still written.
            let _ = record.key_values().visit(&mut fields);
            line.push('}');
            writeln!(buf, "{line}")
        })
        .init();
    // A panic's default message is plain text on stderr, which would break one-JSON-object-per-line.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = panic_message(info.payload());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        log::error!(thread = thread.name().unwrap_or("unnamed"), location = location.as_str(), error = message; "panic");
    }));
}

/// The text of a panic's payload (`panic!("…")` gives a `&str` or a `String`).
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

struct Fields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let json =
            serde_json::to_string(&value).unwrap_or_else(|_| json_string(&value.to_string()));
        push_field(self.0, key.as_str(), &json);
        Ok(())
    }
}

fn push_field(line: &mut String, key: &str, json_value: &str) {
    line.push(',');
    line.push_str(&json_string(key));
    line.push(':');
    line.push_str(json_value);
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}
