//! Exit codes and command-line errors, the same for both binaries: `0` clean stop, `1`
//! configuration error (bad arguments, variables or files at start), `2` runtime error.

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};
use log::error;

/// A number outside the range its variable accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value} is out of range: it must be from {min} to {max}")]
pub struct OutOfRange {
    /// The variable.
    pub name: &'static str,
    /// The value given.
    pub value: u64,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
}

/// Checks that `value`, given for the variable `name`, is within `min..=max`.
///
/// # Errors
///
/// [`OutOfRange`], naming the variable, the value and the range.
///
/// # Examples
///
/// ```
/// use cli_support::exit::in_range;
///
/// assert!(in_range("OUTPUT_CONCURRENCY", 4, 1, 64).is_ok());
/// let err = in_range("OUTPUT_CONCURRENCY", 65, 1, 64).unwrap_err();
/// assert_eq!(err.to_string(), "OUTPUT_CONCURRENCY=65 is out of range: it must be from 1 to 64");
/// ```
pub fn in_range(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), OutOfRange> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(OutOfRange {
            name,
            value,
            min,
            max,
        })
    }
}

/// Why a binary stops with an error, which decides its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: the configuration cannot work.
    Config(anyhow::Error),
    /// Exit 2: something failed at run time.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::Runtime(err)
    }
}

/// Parses the command line. Help and version are printed and end the process with 0 (what the
/// user asked for is not a failure); any other error is logged as one JSON line — after
/// `init_log` installs the logger — with `describe`'s text, and ends it with 1.
///
/// # Errors
///
/// The exit code to end the process with.
pub fn parse_args<T: Parser>(
    init_log: impl FnOnce(),
    describe: impl FnOnce(&clap::Error) -> String,
) -> Result<T, ExitCode> {
    match T::try_parse() {
        Ok(args) => Ok(args),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            Err(ExitCode::SUCCESS)
        }
        Err(err) => {
            init_log();
            error!(error = describe(&err).as_str(); "invalid arguments");
            Err(ExitCode::from(1))
        }
    }
}

/// The first line of clap's message, without its `error: ` prefix.
#[must_use]
pub fn first_line(err: &clap::Error) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned()
}

/// Logs a failure (with its causes) and gives the exit code for `result`; `program` names the
/// binary in the message of a runtime failure (`sniffer failed: …`).
#[must_use]
pub fn code(result: Result<(), Failure>, program: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(err)) => {
            error!(error = format!("{err:#}").as_str(); "invalid configuration: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Runtime(err)) => {
            error!(error = format!("{err:#}").as_str(); "{program} failed: {err:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[arg(long)]
        port: u16,
    }

    #[test]
    fn first_lines_drop_the_prefix() {
        let err = Args::try_parse_from(["x", "--port", "http"]).unwrap_err();
        assert_eq!(
            first_line(&err),
            "invalid value 'http' for '--port <PORT>': invalid digit found in string"
        );
    }

    #[test]
    fn codes() {
        assert_eq!(code(Ok(()), "x"), ExitCode::SUCCESS);
        assert_eq!(
            code(Err(Failure::Config(anyhow::anyhow!("bad"))), "x"),
            ExitCode::from(1)
        );
        assert_eq!(
            code(Err(anyhow::anyhow!("broke").into()), "x"),
            ExitCode::from(2)
        );
    }
}
