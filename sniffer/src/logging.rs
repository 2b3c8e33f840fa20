//! JSON logs on stderr, one object per line, through `env_logger` (filter with `RUST_LOG`).
//!
//! Each line carries `ts`, `level`, `msg`, `target`, the placement fields (`pod`, `namespace`,
//! `node`, null when unset) and the record's key-values, e.g. `info!(interface = name; "…")`.

use std::io::Write as _;

use log::kv::{Key, Value, VisitSource};

use crate::{clock::Timestamp, config::Placement};

/// Installs the JSON logger; the default level is `info`.
pub fn init(placement: &Placement) {
    let Placement {
        pod,
        namespace,
        node,
    } = placement.clone();
    // Always present (null when unknown) so log pipelines see one schema.
    let fixed: Vec<(&'static str, String)> =
        [("pod", pod), ("namespace", namespace), ("node", node)]
            .into_iter()
            .map(|(key, value)| {
                (
                    key,
                    value.map_or_else(|| "null".to_owned(), |v| json_string(&v)),
                )
            })
            .collect();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            let mut line = format!(
                r#"{{"ts":"{}","level":"{}","msg":{},"target":{}"#,
                Timestamp::now(),
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
