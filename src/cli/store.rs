//! `writ store …`: lease store tools, run against the store itself with
//! every replica stopped.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;

use crate::config::Config;
use crate::store::{StoreConfig, reshard};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Move a Redis namespace to another number of shards (stop every
    /// replica first; then set `shards` to the same number in every
    /// replica's configuration). Safe to run again if cut short.
    Reshard {
        #[arg(long, short, env = "WRIT_CONFIG", default_value = "writ.toml")]
        config: PathBuf,
        /// The new number of shards (1 to 1024).
        #[arg(long)]
        shards: u16,
    },
}

pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Reshard { config, shards } => {
            let loaded = Config::load(&config)?;
            let StoreConfig::Redis(redis) = &loaded.store else {
                bail!("{}: the store is not Redis; only the Redis store has shards", config.display());
            };
            if !(1..=crate::store::MAX_SHARDS).contains(&shards) {
                bail!("--shards must be between 1 and {}", crate::store::MAX_SHARDS);
            }
            let moved = reshard(redis, shards).await?;
            if moved.from == moved.to {
                println!(
                    "namespace {:?} is in {} shard(s) already; nothing moved",
                    redis.namespace, moved.to
                );
            } else {
                println!(
                    "namespace {:?} moved from {} to {} shard(s): {} task(s), {} lease(s), {} approval \
                     request(s); set shards = {} in every replica's configuration before starting them",
                    redis.namespace,
                    moved.from,
                    moved.to,
                    moved.tasks,
                    moved.leases,
                    moved.approvals,
                    moved.to
                );
            }
            Ok(())
        }
    }
}
