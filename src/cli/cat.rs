use super::GlobalArgs;
use crate::cli::snapshots::snapshot_json;
use anyhow::{anyhow, Result};
use cairn::crypto::keyfile::KeyFile;
use cairn::filter::BlobKind;
use cairn::id::Id;
use cairn::repo::layout;

#[derive(clap::Args)]
pub struct CatArgs {
    /// config | snapshot ID | index ID | key ID | tree ID | pack ID
    kind: String,
    /// Object id (a snapshot also takes a unique prefix or `latest`)
    id: Option<String>,
}

pub fn run(g: &GlobalArgs, a: &CatArgs) -> Result<i32> {
    let repo = g.open()?;
    let id = || -> Result<Id> {
        let text =
            a.id.as_deref()
                .ok_or_else(|| anyhow!("cat {} needs an id", a.kind))?;
        Id::from_hex(text).ok_or_else(|| anyhow!("{text:?} is not a full 64-digit hex id"))
    };
    let value = match a.kind.as_str() {
        "config" => serde_json::to_value(&repo.config)?,
        "snapshot" => {
            let spec =
                a.id.as_deref()
                    .ok_or_else(|| anyhow!("cat snapshot needs an id"))?;
            let (id, s) = repo.find_snapshot(spec, &Default::default())?;
            snapshot_json(&id, &s)
        }
        "index" => serde_json::to_value(repo.read_index_file(&id()?)?)?,
        "key" => {
            let k = KeyFile::decode(
                &repo
                    .storage
                    .read(&layout::key(&id()?), layout::max_size::KEY)?,
            )?;
            serde_json::json!({"kdf": k.kdf, "created_ns": k.created_ns, "hostname": k.hostname, "username": k.username})
        }
        "tree" => serde_json::to_value(repo.load_tree(&id()?)?)?,
        "pack" => {
            let bytes = repo
                .storage
                .read(&layout::pack(&id()?), layout::max_size::PACK)?;
            serde_json::to_value(cairn::pack::read_pack_header(&repo.keys.cipher(), &bytes)?)?
        }
        "blob" => {
            let data = repo.read_blob(BlobKind::Data, &id()?)?;
            std::io::Write::write_all(&mut std::io::stdout(), &data)?;
            return Ok(0);
        }
        other => {
            return Err(anyhow!(
                "unknown object kind {other:?}: config, snapshot, index, key, tree, pack or blob"
            ))
        }
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(0)
}
