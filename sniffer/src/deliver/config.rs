//! Where records go: the delivery variables (`OUTPUT_*`, `BATCH_*`, `BUFFER_MAX_RECORDS`,
//! `RETRY_*`), flattened into the sniffer's arguments, and their validation into a
//! [`DeliveryConfig`] for the collector (or the stdout buffer without one).

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, builder::BoolishValueParser};
use cli_support::exit::{OutOfRange, in_range};
use sidecar_contract::{
    echo::Echo,
    env,
    headers::{self, Credential, HeaderError},
    url::{Scheme, UrlError, parse_http_url},
};
use thiserror::Error;

use crate::encode::{Format, UnknownFormat};

/// The delivery variables, as given.
#[derive(Clone, Debug, clap::Args)]
pub struct DeliveryArgs {
    /// http(s) URL that receives batches by POST; when unset, records go to stdout as NDJSON.
    #[arg(long, env = env::OUTPUT_URL)]
    pub output_url: Option<String>,
    /// Sent as `Authorization: Bearer <token>`; prefer the variable to the flag (visible in `ps`).
    /// One trailing newline is removed (with a warning); other control characters are refused.
    #[arg(long, env = env::OUTPUT_URL_AUTH_TOKEN, hide_env_values = true)]
    pub output_url_auth_token: Option<String>,
    /// The header that carries the token (`X-ClickHouse-Key`, …).
    #[arg(long, env = env::OUTPUT_AUTH_HEADER, default_value = "Authorization")]
    pub output_auth_header: String,
    /// The word before the token in its header (`Bearer`, `Basic`, `ApiKey`, …); empty: the token
    /// alone.
    #[arg(long, env = env::OUTPUT_AUTH_SCHEME, default_value = "Bearer")]
    pub output_auth_scheme: String,
    /// More headers for every request, `Name=value` pairs separated by commas, values
    /// percent-encoded where needed (`X-Scope-OrgID=tenant-1,X-ClickHouse-User=sniffer`); values
    /// are never logged.
    #[arg(long, env = env::OUTPUT_HEADERS, hide_env_values = true)]
    pub output_headers: Option<String>,
    /// The body format: `batch`, `ndjson`, `otlp` or `loki`.
    #[arg(long, env = env::OUTPUT_FORMAT, default_value = "batch")]
    pub output_format: String,
    /// With `OUTPUT_FORMAT=otlp`: `protobuf` or `json`.
    #[arg(long, env = env::OTLP_ENCODING, default_value = "protobuf")]
    pub otlp_encoding: String,
    /// Allow sending the token over `http://` (plaintext), e.g. when a service mesh already
    /// encrypts the connection with mTLS; without it such a configuration is refused.
    #[arg(long, env = env::OUTPUT_ALLOW_PLAINTEXT_TOKEN, default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub output_allow_plaintext_token: bool,
    /// A batch is sent when it holds this many records. (Fewer, larger requests cost less CPU
    /// under load: 2000 took a flood's HTTP delivery from about 320 to 277 ns of process CPU a
    /// packet against 1000; 4000 and 8000 saved nothing more and held more memory.)
    #[arg(long, env = env::BATCH_MAX_RECORDS, default_value_t = 2000)]
    pub batch_max_records: usize,
    /// … or when its oldest record is this old (milliseconds).
    #[arg(long, env = env::BATCH_MAX_WAIT_MS, default_value_t = 1000)]
    pub batch_max_wait_ms: u64,
    /// Records that may wait for delivery (to the collector, or for stdout to take them);
    /// beyond it new records are dropped and counted.
    #[arg(long, env = env::BUFFER_MAX_RECORDS, default_value_t = 50_000)]
    pub buffer_max_records: usize,
    /// Delivery requests in flight at once (sender threads), 1-64.
    #[arg(long, env = env::OUTPUT_CONCURRENCY, default_value_t = 4)]
    pub output_concurrency: usize,
    /// Compress batch bodies with gzip (`Content-Encoding: gzip`).
    #[arg(long, env = env::OUTPUT_GZIP, default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub output_gzip: bool,
    /// Connect timeout towards the collector (milliseconds).
    #[arg(long, env = env::OUTPUT_CONNECT_TIMEOUT_MS, default_value_t = 3000)]
    pub output_connect_timeout_ms: u64,
    /// Timeout of one whole delivery request (milliseconds).
    #[arg(long, env = env::OUTPUT_TIMEOUT_MS, default_value_t = 10_000)]
    pub output_timeout_ms: u64,
    /// PEM file of CA certificates to trust for an https `OUTPUT_URL`, instead of the system's.
    #[arg(long, env = env::OUTPUT_CA_FILE)]
    pub output_ca_file: Option<PathBuf>,
    /// First retry delay (milliseconds); it doubles per attempt, with jitter.
    #[arg(long, env = env::RETRY_INITIAL_MS, default_value_t = 200)]
    pub retry_initial_ms: u64,
    /// Longest retry delay (milliseconds).
    #[arg(long, env = env::RETRY_MAX_MS, default_value_t = 30_000)]
    pub retry_max_ms: u64,
}

/// How to reach the collector.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// `OUTPUT_URL`, checked by the URL rule.
    pub url: String,
    /// The body format.
    pub format: Format,
    /// Every header sent besides `Content-Type` and `Content-Encoding`: the token's (name and
    /// value, scheme included) first, then `OUTPUT_HEADERS`. Values are never logged.
    pub headers: Vec<(String, String)>,
    /// Compress bodies with gzip (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of a whole request (connect, send, response).
    pub request_timeout: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay, and longest wait of any kind (a `Retry-After` too).
    pub backoff_max: Duration,
    /// PEM file of CA certificates to trust instead of the platform's.
    pub ca_file: Option<PathBuf>,
    /// Records per batch.
    pub batch_max_records: usize,
    /// Age of a batch's oldest record that closes it.
    pub batch_max_wait: Duration,
    /// Records that may wait for delivery.
    pub buffer_max_records: usize,
    /// Requests in flight at once (sender threads), 1–64.
    pub concurrency: usize,
}

/// Something the operator should know about an accepted configuration, logged as a warning at
/// start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The token ended with a newline (`kubectl create secret --from-file` of a file written by
    /// `echo`), which was removed.
    TokenNewlineTrimmed,
    /// A credential (the first, if several) goes over `http://` because
    /// `OUTPUT_ALLOW_PLAINTEXT_TOKEN` says so.
    PlaintextCredential(Credential),
    /// The token is set but empty: no `Authorization` header is sent.
    EmptyToken,
}

impl Warning {
    /// The log message.
    #[must_use]
    pub fn message(self) -> String {
        let text = match self {
            Self::TokenNewlineTrimmed => {
                "OUTPUT_URL_AUTH_TOKEN ended with a newline, which was removed (a Secret made with --from-file of a file that ends in a newline)"
            }
            Self::PlaintextCredential(credential) => {
                return format!(
                    "{credential} is sent over http:// in plaintext, as OUTPUT_ALLOW_PLAINTEXT_TOKEN allows"
                );
            }
            Self::EmptyToken => {
                "OUTPUT_URL_AUTH_TOKEN is empty: batches are sent without an Authorization header"
            }
        };
        text.to_owned()
    }
}

/// The validated delivery settings.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Delivery to a collector; `None` writes NDJSON to stdout.
    pub output: Option<DeliveryConfig>,
    /// Things to warn about at start.
    pub warnings: Vec<Warning>,
    /// Records that may wait for stdout to take them (`BUFFER_MAX_RECORDS`), without
    /// `OUTPUT_URL`.
    pub stdout_buffer_records: usize,
}

/// A delivery setting the sniffer cannot start with.
#[derive(Debug, Error)]
pub enum DeliveryConfigError {
    /// `OUTPUT_URL` breaks the URL rule shared with the injector ([`sidecar_contract::url`]).
    #[error("OUTPUT_URL {:?} {problem}", Echo(value))]
    OutputUrl {
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: UrlError,
    },
    /// `OUTPUT_URL_AUTH_TOKEN` holds a character no HTTP header can carry.
    #[error(
        "OUTPUT_URL_AUTH_TOKEN contains a control character (byte {byte:#04x} at position {position}); only one trailing newline is removed: fix the Secret"
    )]
    TokenCharacter {
        /// The character's byte value (the token itself is never shown).
        byte: u8,
        /// Its 0-based byte position.
        position: usize,
    },
    /// A credential would travel over plain HTTP: the token, or a header whose name says it
    /// carries one ([`headers::plaintext_credentials`], the rule the injector applies too).
    #[error(
        "{0} would be sent in plaintext to an http:// OUTPUT_URL: use https://, or set OUTPUT_ALLOW_PLAINTEXT_TOKEN=true if the network already encrypts it (e.g. a service mesh with mTLS)"
    )]
    PlaintextCredential(Credential),
    /// `OUTPUT_FORMAT` or `OTLP_ENCODING` names no format.
    #[error("{name} {:?} {problem}", Echo(value))]
    Format {
        /// The variable.
        name: &'static str,
        /// The value given.
        value: String,
        /// The values accepted.
        problem: &'static str,
    },
    /// `OUTPUT_FORMAT` is set, but records go to stdout.
    #[error("OUTPUT_FORMAT={0} needs OUTPUT_URL: stdout always carries NDJSON records")]
    FormatWithoutUrl(String),
    /// `OUTPUT_HEADERS` or the token's header cannot be sent.
    #[error("{0}")]
    Header(HeaderError),
    /// A number outside its range.
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
}

impl DeliveryArgs {
    /// Checks every delivery value.
    pub fn validate(&self) -> Result<Delivery, DeliveryConfigError> {
        let mut warnings = Vec::new();
        let output = self
            .output_url
            .as_deref()
            .map(|url| self.collector(url, &mut warnings))
            .transpose()?;
        if output.is_none() {
            if self.output_format != "batch" {
                return Err(DeliveryConfigError::FormatWithoutUrl(
                    Echo(&self.output_format).to_string(),
                ));
            }
            in_range(
                "BUFFER_MAX_RECORDS",
                self.buffer_max_records as u64,
                1,
                10_000_000,
            )?;
        }
        Ok(Delivery {
            output,
            warnings,
            stdout_buffer_records: self.buffer_max_records,
        })
    }

    fn collector(
        &self,
        url: &str,
        warnings: &mut Vec<Warning>,
    ) -> Result<DeliveryConfig, DeliveryConfigError> {
        let scheme = validate_url(url)?;
        in_range(
            "BATCH_MAX_RECORDS",
            self.batch_max_records as u64,
            1,
            100_000,
        )?;
        in_range("BATCH_MAX_WAIT_MS", self.batch_max_wait_ms, 1, 600_000)?;
        in_range(
            "BUFFER_MAX_RECORDS",
            self.buffer_max_records as u64,
            self.batch_max_records as u64,
            10_000_000,
        )?;
        in_range(
            "OUTPUT_CONNECT_TIMEOUT_MS",
            self.output_connect_timeout_ms,
            1,
            600_000,
        )?;
        in_range("OUTPUT_TIMEOUT_MS", self.output_timeout_ms, 1, 600_000)?;
        in_range("RETRY_INITIAL_MS", self.retry_initial_ms, 1, 600_000)?;
        in_range(
            "RETRY_MAX_MS",
            self.retry_max_ms,
            self.retry_initial_ms,
            3_600_000,
        )?;
        in_range(
            "OUTPUT_CONCURRENCY",
            self.output_concurrency as u64,
            1,
            MAX_OUTPUT_CONCURRENCY,
        )?;
        let format = match self.output_format.parse::<Format>() {
            Ok(Format::OtlpProtobuf) => match self.otlp_encoding.as_str() {
                "protobuf" => Format::OtlpProtobuf,
                "json" => Format::OtlpJson,
                other => {
                    return Err(DeliveryConfigError::Format {
                        name: "OTLP_ENCODING",
                        value: other.to_owned(),
                        problem: "is not one of protobuf, json",
                    });
                }
            },
            Ok(format) => format,
            Err(UnknownFormat) => {
                return Err(DeliveryConfigError::Format {
                    name: "OUTPUT_FORMAT",
                    value: self.output_format.clone(),
                    problem: "is not one of batch, ndjson, otlp, loki",
                });
            }
        };
        let token = match self.output_url_auth_token.as_deref() {
            None => None,
            Some(raw) => {
                let (token, trimmed) = clean_token(raw)?;
                if trimmed {
                    warnings.push(Warning::TokenNewlineTrimmed);
                }
                if token.is_empty() {
                    warnings.push(Warning::EmptyToken);
                    None
                } else {
                    Some(token.to_owned())
                }
            }
        };
        let auth = token
            .as_deref()
            .map(|token| headers::auth(&self.output_auth_header, &self.output_auth_scheme, token))
            .transpose()
            .map_err(DeliveryConfigError::Header)?;
        let extra = match self.output_headers.as_deref() {
            Some(text) => {
                headers::parse(text, auth.as_ref()).map_err(DeliveryConfigError::Header)?
            }
            None => Vec::new(),
        };
        let credentials =
            auth.iter()
                .map(|_| Credential::Token)
                .chain(extra.iter().enumerate().filter_map(|(index, (name, _))| {
                    headers::carries_credential(name).then_some(Credential::Header {
                        position: index + 1,
                    })
                }));
        match headers::plaintext_credentials(scheme, self.output_allow_plaintext_token, credentials)
        {
            Ok(None) => {}
            Ok(Some(credential)) => warnings.push(Warning::PlaintextCredential(credential)),
            Err(credential) => return Err(DeliveryConfigError::PlaintextCredential(credential)),
        }
        let headers_list: Vec<(String, String)> = auth.into_iter().chain(extra).collect();
        Ok(DeliveryConfig {
            url: url.to_owned(),
            format,
            headers: headers_list,
            gzip: self.output_gzip,
            connect_timeout: Duration::from_millis(self.output_connect_timeout_ms),
            request_timeout: Duration::from_millis(self.output_timeout_ms),
            backoff_initial: Duration::from_millis(self.retry_initial_ms),
            backoff_max: Duration::from_millis(self.retry_max_ms),
            ca_file: self.output_ca_file.clone(),
            batch_max_records: self.batch_max_records,
            batch_max_wait: Duration::from_millis(self.batch_max_wait_ms),
            buffer_max_records: self.buffer_max_records,
            concurrency: self.output_concurrency,
        })
    }
}

/// The most sender threads `OUTPUT_CONCURRENCY` may ask for.
pub const MAX_OUTPUT_CONCURRENCY: u64 = 64;

/// The token without one trailing `\n` or `\r\n` (and whether one was there), or the position of
/// a control character no HTTP header can carry.
fn clean_token(raw: &str) -> Result<(&str, bool), DeliveryConfigError> {
    let token = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(raw);
    if let Some((position, byte)) = token
        .bytes()
        .enumerate()
        .find(|&(_, b)| b.is_ascii_control())
    {
        return Err(DeliveryConfigError::TokenCharacter { byte, position });
    }
    Ok((token, token.len() != raw.len()))
}

/// Checks `OUTPUT_URL` with the rule the injector applies to `outputUrl`
/// ([`sidecar_contract::url`]); returns its scheme.
///
/// # Examples
///
/// ```
/// use sniffer::deliver::config::validate_url;
///
/// assert!(validate_url("https://collector.observability:8443/v1/batches").is_ok());
/// assert!(validate_url("ftp://collector/").is_err());
/// assert!(validate_url("not a url").is_err());
/// ```
pub fn validate_url(value: &str) -> Result<Scheme, DeliveryConfigError> {
    parse_http_url(value)
        .map(|url| url.scheme)
        .map_err(|problem| DeliveryConfigError::OutputUrl {
            value: value.to_owned(),
            problem,
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use sidecar_contract::url::url_cases;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        delivery: DeliveryArgs,
    }

    fn delivery_args() -> DeliveryArgs {
        Cli::try_parse_from(["sniffer"]).unwrap().delivery
    }

    /// Every URL of the shared table that the rule accepts is one the HTTP client takes as it is,
    /// with the same host and port; every other one is refused with the table's reason.
    #[test]
    fn output_urls_follow_the_shared_table_and_suit_the_http_client() {
        for (url, expected) in url_cases() {
            match (validate_url(url), expected) {
                (Ok(_), None) => {
                    let parts = parse_http_url(url).unwrap();
                    let uri: ureq::http::Uri = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
                    let scheme = uri.scheme_str().unwrap().to_ascii_lowercase();
                    assert!(scheme == "http" || scheme == "https", "{url}");
                    let host = uri.host().unwrap();
                    assert_eq!(
                        host.trim_start_matches('[').trim_end_matches(']'),
                        parts.host,
                        "{url}"
                    );
                    assert_eq!(uri.port_u16(), parts.port, "{url}");
                }
                (Err(DeliveryConfigError::OutputUrl { value, problem }), Some(reason)) => {
                    assert_eq!((value.as_str(), problem), (url, reason));
                }
                (got, want) => panic!("{url:?}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn delivery_settings() {
        let mut with_url = delivery_args();
        with_url.output_url = Some("https://collector:9000/".into());
        with_url.output_url_auth_token = Some("s3cret".into());
        let delivery = with_url.validate().unwrap().output.expect("delivery");
        assert_eq!(
            delivery.headers,
            [("Authorization".to_owned(), "Bearer s3cret".to_owned())]
        );
        assert_eq!(delivery.batch_max_records, 2000);
        assert_eq!(delivery.batch_max_wait, Duration::from_secs(1));
        assert!(!delivery.gzip);

        let mut small_buffer = with_url.clone();
        small_buffer.buffer_max_records = 10;
        assert!(matches!(
            small_buffer.validate(),
            Err(DeliveryConfigError::OutOfRange(OutOfRange {
                name: "BUFFER_MAX_RECORDS",
                value: 10,
                min: 2000,
                ..
            }))
        ));
        let mut zero_batch = with_url.clone();
        zero_batch.batch_max_records = 0;
        assert!(matches!(
            zero_batch.validate(),
            Err(DeliveryConfigError::OutOfRange(OutOfRange {
                name: "BATCH_MAX_RECORDS",
                ..
            }))
        ));
        assert!(delivery_args().validate().unwrap().output.is_none());
    }

    fn with_token(url: &str, token: &str) -> DeliveryArgs {
        let mut args = delivery_args();
        args.output_url = Some(url.into());
        args.output_url_auth_token = Some(token.into());
        args
    }

    #[test]
    fn one_trailing_newline_is_trimmed_with_a_warning() {
        for (raw, expected, warned) in [
            ("s3cret", "s3cret", false),
            ("s3cret\n", "s3cret", true),
            ("s3cret\r\n", "s3cret", true),
            ("s3 cret ", "s3 cret ", false),
        ] {
            let config = with_token("https://collector/", raw).validate().unwrap();
            assert_eq!(
                config.output.unwrap().headers,
                [("Authorization".to_owned(), format!("Bearer {expected}"))],
                "{raw:?}"
            );
            assert_eq!(
                config.warnings.contains(&Warning::TokenNewlineTrimmed),
                warned,
                "{raw:?}"
            );
        }
        let empty = with_token("https://collector/", "\n").validate().unwrap();
        assert!(empty.output.unwrap().headers.is_empty());
        assert!(empty.warnings.contains(&Warning::EmptyToken));
    }

    #[test]
    fn other_control_characters_are_refused_without_showing_the_token() {
        for (raw, byte, position) in [
            ("s3cret\n\n", 0x0a, 6),
            ("s3\ncret", 0x0a, 2),
            ("s3cret\r", 0x0d, 6),
            ("\ts3cret", 0x09, 0),
            ("s3cr\u{7f}et", 0x7f, 4),
            ("s3cret\0", 0x00, 6),
        ] {
            let err = with_token("https://collector/", raw)
                .validate()
                .unwrap_err();
            assert!(
                matches!(err, DeliveryConfigError::TokenCharacter { byte: b, position: p } if (b, p) == (byte, position)),
                "{raw:?}: {err:?}"
            );
            assert!(!err.to_string().contains("s3"), "{err}");
        }
    }

    #[test]
    fn a_token_over_plain_http_needs_the_opt_in() {
        let err = with_token("http://collector/", "s3cret")
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            DeliveryConfigError::PlaintextCredential(Credential::Token)
        ));
        assert!(!err.to_string().contains("s3cret"));
        let mut allowed = with_token("HTTP://collector/", "s3cret");
        allowed.output_allow_plaintext_token = true;
        let config = allowed.validate().unwrap();
        assert_eq!(
            config.warnings,
            [Warning::PlaintextCredential(Credential::Token)]
        );
        // No token, nothing to protect.
        let mut no_token = delivery_args();
        no_token.output_url = Some("http://collector/".into());
        assert!(no_token.validate().unwrap().warnings.is_empty());
    }

    #[test]
    fn credential_headers_follow_the_token_s_rule() {
        let mut clickhouse = delivery_args();
        clickhouse.output_url = Some("http://ch:8123/".into());
        clickhouse.output_headers =
            Some("X-ClickHouse-User=sniffer,X-ClickHouse-Key=s3cret".into());
        let err = clickhouse.validate().unwrap_err();
        assert!(matches!(
            err,
            DeliveryConfigError::PlaintextCredential(Credential::Header { position: 2 })
        ));
        assert!(
            err.to_string().starts_with("OUTPUT_HEADERS entry 2 (its name says it carries a credential) would be sent in plaintext"),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cret"));
        clickhouse.output_allow_plaintext_token = true;
        assert_eq!(
            clickhouse.validate().unwrap().warnings,
            [Warning::PlaintextCredential(Credential::Header {
                position: 2
            })]
        );
        clickhouse.output_url = Some("https://ch:8443/".into());
        clickhouse.output_allow_plaintext_token = false;
        assert!(clickhouse.validate().unwrap().warnings.is_empty());
        // A header that is no credential goes over http:// as it always did.
        let mut loki = delivery_args();
        loki.output_url = Some("http://loki:3100/loki/api/v1/push".into());
        loki.output_headers = Some("X-Scope-OrgID=tenant-1".into());
        assert!(loki.validate().unwrap().warnings.is_empty());
    }

    #[test]
    fn output_concurrency_is_1_to_64() {
        for (value, ok) in [
            (0, false),
            (1, true),
            (64, true),
            (65, false),
            (100_000, false),
        ] {
            let mut args = delivery_args();
            args.output_url = Some("http://collector/".into());
            args.output_concurrency = value;
            match args.validate() {
                Ok(config) => assert!(ok && config.output.unwrap().concurrency == value),
                Err(DeliveryConfigError::OutOfRange(OutOfRange {
                    name,
                    min: 1,
                    max: 64,
                    ..
                })) => {
                    assert!(!ok && name == "OUTPUT_CONCURRENCY");
                }
                Err(other) => panic!("{value}: {other}"),
            }
        }
    }

    #[test]
    fn formats_and_encodings() {
        for (format, encoding, expected) in [
            ("batch", "protobuf", Format::Batch),
            ("ndjson", "protobuf", Format::Ndjson),
            ("otlp", "protobuf", Format::OtlpProtobuf),
            ("otlp", "json", Format::OtlpJson),
            ("loki", "json", Format::Loki),
        ] {
            let mut args = delivery_args();
            args.output_url = Some("https://collector/".into());
            args.output_format = format.into();
            args.otlp_encoding = encoding.into();
            assert_eq!(args.validate().unwrap().output.unwrap().format, expected);
        }
        let mut bad = delivery_args();
        bad.output_url = Some("https://collector/".into());
        bad.output_format = "json".into();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "OUTPUT_FORMAT \"json\" is not one of batch, ndjson, otlp, loki"
        );
        bad.output_format = "otlp".into();
        bad.otlp_encoding = "grpc".into();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "OTLP_ENCODING \"grpc\" is not one of protobuf, json"
        );
        let mut stdout = delivery_args();
        stdout.output_format = "otlp".into();
        assert!(matches!(
            stdout.validate(),
            Err(DeliveryConfigError::FormatWithoutUrl(f)) if f == "otlp"
        ));
    }

    #[test]
    fn token_header_scheme_and_extra_headers() {
        let mut args = with_token("https://ch:8123/?query=INSERT", "k3y");
        args.output_auth_header = "X-ClickHouse-Key".into();
        args.output_auth_scheme = String::new();
        args.output_headers = Some("X-ClickHouse-User=sniffer".into());
        assert_eq!(
            args.validate().unwrap().output.unwrap().headers,
            [
                ("X-ClickHouse-Key".to_owned(), "k3y".to_owned()),
                ("X-ClickHouse-User".to_owned(), "sniffer".to_owned())
            ]
        );
        args.output_headers = Some("x-clickhouse-key=other".into());
        assert!(matches!(
            args.validate(),
            Err(DeliveryConfigError::Header(HeaderError::Duplicate { .. }))
        ));
        // Headers without a token are sent too.
        let mut no_token = delivery_args();
        no_token.output_url = Some("http://loki:3100/loki/api/v1/push".into());
        no_token.output_headers = Some("X-Scope-OrgID=tenant-1".into());
        assert_eq!(
            no_token.validate().unwrap().output.unwrap().headers.len(),
            1
        );
    }

    #[test]
    fn gzip_flag_accepts_boolish_values() {
        for (value, expected) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("false", false),
            ("0", false),
            ("off", false),
        ] {
            let parsed = Cli::try_parse_from(["sniffer", "--output-gzip", value]).unwrap();
            assert_eq!(parsed.delivery.output_gzip, expected, "{value}");
        }
        assert!(Cli::try_parse_from(["sniffer", "--output-gzip", "maybe"]).is_err());
    }
}
