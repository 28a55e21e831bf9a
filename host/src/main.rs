//! The `host` binary: parse flags, dispatch to [`tidemark::commands`], map errors to exit
//! codes (2 for input the user must fix, 1 for everything else).

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use tidemark::commands;
use tidemark::front::cli::{Cli, Command};
use tidemark::{Error, ErrorKind};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // Flags given on the command line (not defaults): a pipelines file takes the place of most.
    let explicit: Vec<String> = matches
        .subcommand_matches("run")
        .map(|run| {
            run.ids()
                .filter(|id| run.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| id.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default();
    commands::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(*args, &explicit).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Reset(args) => commands::reset::run(args).await,
            Command::Check(args) => commands::check::run(args).await,
            Command::Test(args) => commands::test::run(*args).await,
            Command::New(args) => commands::new::run(args),
            Command::DeadLetters(args) => commands::dead_letters::run(args).await,
            Command::Retry(args) => commands::retry::run(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

/// Prints the error chain and its hint; picks the exit code from the engine's error kind.
fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    let engine_error = err.chain().find_map(|cause| cause.downcast_ref::<Error>());
    if let Some(hint) = engine_error.and_then(Error::hint) {
        eprintln!("hint: {hint}");
    }
    match engine_error.map(Error::kind) {
        Some(ErrorKind::Invalid) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
