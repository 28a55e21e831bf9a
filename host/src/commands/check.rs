//! `host check`: which world and version a module implements, what it exports and imports,
//! and whether it came from the compile cache.

use anyhow::Context as _;

use crate::cli::CheckArgs;
use crate::runtime::{self, engine::EngineOptions, Runtime};

/// Runs `host check`.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(&EngineOptions {
        fuel: false,
        max_memory: runtime::limits::DEFAULT_MEMORY,
        cache_dir: args.cache_dir.or_else(runtime::engine::default_cache_dir),
    })?;
    let limits = crate::config::compile_limits(&args.compile)?;
    let inspection = runtime
        .inspect(&args.module, &limits)
        .with_context(|| format!("checking module {}", args.module.display()))?;
    println!("module:  {}", args.module.display());
    println!(
        "world:   {} ({}@{})",
        inspection.world.name(),
        runtime::PACKAGE,
        inspection.version
    );
    println!("exports:");
    for export in &inspection.exports {
        println!("  {export}");
    }
    println!("imports:");
    for import in &inspection.imports {
        println!("  {import}");
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
