//! `host check`: which world and version a module implements, what it exports and imports,
//! the configuration keys it declares, and whether it came from the compile cache.

use anyhow::Context as _;

use crate::front::cli::CheckArgs;
use crate::runtime::{self, engine::EngineOptions, ConfigKey, HttpOptions, Limits, Runtime};

/// Runs `host check`. The declared keys are asked of the module itself (`config-keys` of
/// contract 0.2), in an instance under the default limits that sees no configuration.
pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(&EngineOptions {
        fuel: false,
        max_memory: runtime::limits::DEFAULT_MEMORY,
        cache_dir: args.cache_dir.or_else(runtime::engine::default_cache_dir),
    })?;
    let limits = Limits {
        compile: crate::front::config::compile_limits(&args.compile)?,
        ..Limits::default()
    };
    let checking = || format!("checking module {}", args.module.display());
    let module = runtime
        .load(
            &args.module,
            "check",
            Default::default(),
            limits,
            &HttpOptions::default(),
        )
        .with_context(checking)?;
    let keys = module.config_keys().await.with_context(checking)?;
    let inspection = module.inspection();
    println!("module:  {}", args.module.display());
    println!(
        "world:   {} ({}@{})",
        inspection.world.name(),
        runtime::PACKAGE,
        inspection.implements.version
    );
    println!("exports:");
    for export in &inspection.exports {
        println!("  {export}");
    }
    println!("imports:");
    for import in &inspection.imports {
        println!("  {import}");
    }
    match keys {
        Some(keys) => {
            println!("config keys:");
            for key in &keys {
                println!("  {}", described(key));
            }
            if keys.is_empty() {
                println!("  (none: the module takes no configuration)");
            }
        }
        None => println!(
            "config keys: not declared (the module takes any key; {})",
            match inspection.implements.contract {
                runtime::Contract::V0_1 => "contract 0.1 has no lifecycle export",
                runtime::Contract::V0_2 => "it does not export lifecycle, or says none",
            }
        ),
    }
    println!(
        "{} in {:.1?}",
        if inspection.from_cache {
            "loaded from the compile cache"
        } else {
            "compiled (now cached)"
        },
        inspection.load_time
    );
    Ok(())
}

/// `list_id (required): the audience to sync into`.
fn described(key: &ConfigKey) -> String {
    match key.description.trim() {
        "" => runtime::flagged_key(key),
        description => format!("{}: {description}", runtime::flagged_key(key)),
    }
}
