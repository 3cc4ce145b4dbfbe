//! Name resolution, as A1111 resolves the names clients send: only against listed entries, so a
//! name can never reach a file outside the models folder (`..` and absolute paths simply match
//! nothing, and are reported as such).

use std::path::Path;

use super::entries::{CheckpointEntry, LoraEntry, VaeEntry};

/// A checkpoint by any of A1111's aliases: title, relative path, `model_name`, file stem,
/// short hash, full sha256, `"name [hash]"`; then, like A1111's `get_closet_checkpoint_match`,
/// the shortest title containing the name.
pub fn find_checkpoint<'a>(entries: &'a [CheckpointEntry], name: &str) -> Option<&'a CheckpointEntry> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let normalized = name.replace('\\', "/");
    let lower = name.to_ascii_lowercase();
    let exact = |e: &&CheckpointEntry| {
        e.title == name
            || e.relpath == normalized
            || e.model_name == name
            || e.stem() == name
            || e.hash == lower
            || e.sha256 == lower
            || strip_relpath_extension(&e.relpath) == normalized
    };
    if let Some(entry) = entries.iter().find(exact) {
        return Some(entry);
    }
    // "name [hash]" with a name or hash of its own.
    if let Some((base, hash)) = split_bracketed_hash(name) {
        if let Some(entry) = entries.iter().find(|e| e.hash == hash || e.sha256.starts_with(&hash)) {
            return Some(entry);
        }
        return find_checkpoint(entries, base);
    }
    if is_path_like(name) {
        return None;
    }
    entries.iter().filter(|e| e.title.contains(name)).min_by_key(|e| e.title.len())
}

/// A LoRA by file stem, then by alias (`ss_output_name`), then by relative path with or
/// without extension.
pub fn find_lora<'a>(entries: &'a [LoraEntry], name: &str) -> Option<&'a LoraEntry> {
    let name = name.trim();
    let normalized = name.replace('\\', "/");
    entries
        .iter()
        .find(|e| e.name == name)
        .or_else(|| entries.iter().find(|e| e.alias == name))
        .or_else(|| entries.iter().find(|e| e.relpath == normalized || strip_relpath_extension(&e.relpath) == normalized))
}

/// A VAE by file name (A1111's `sd_vae` value), stem, or relative path.
pub fn find_vae<'a>(entries: &'a [VaeEntry], name: &str) -> Option<&'a VaeEntry> {
    let name = name.trim();
    let normalized = name.replace('\\', "/");
    entries.iter().find(|e| {
        e.model_name == name
            || e.relpath == normalized
            || strip_relpath_extension(&e.relpath) == normalized
            || Path::new(&e.model_name).file_stem().is_some_and(|s| s == name)
    })
}

/// `sd_vae` values that mean "the checkpoint's own VAE".
pub fn is_builtin_vae(name: &str) -> bool {
    let name = name.trim();
    name.is_empty() || name.eq_ignore_ascii_case("automatic") || name.eq_ignore_ascii_case("none")
}

/// Names that try to be paths outside the folder: absolute, or with a `..` component.
pub fn is_path_like(name: &str) -> bool {
    let normalized = name.replace('\\', "/");
    Path::new(&normalized).is_absolute() || normalized.split('/').any(|part| part == "..") || normalized.chars().nth(1) == Some(':')
}

fn strip_relpath_extension(relpath: &str) -> &str {
    match relpath.rsplit_once('.') {
        Some((stem, ext)) if !ext.contains('/') => stem,
        _ => relpath,
    }
}

/// `"model.safetensors [abcdef0123]"` → `("model.safetensors", "abcdef0123")`.
fn split_bracketed_hash(name: &str) -> Option<(&str, String)> {
    let inner = name.strip_suffix(']')?;
    let (base, hash) = inner.rsplit_once(" [")?;
    let hash = hash.to_ascii_lowercase();
    (hash.len() >= 8 && hash.chars().all(|c| c.is_ascii_hexdigit())).then_some((base, hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::models::hub::ModelFormat;
    use std::path::PathBuf;

    fn entry(relpath: &str, sha: &str) -> CheckpointEntry {
        let hash = sha[..10].to_string();
        CheckpointEntry {
            title: format!("{relpath} [{hash}]"),
            relpath: relpath.to_string(),
            model_name: relpath.rsplit_once('.').map(|(s, _)| s).unwrap_or(relpath).replace('/', "_"),
            path: PathBuf::from("/models/Stable-diffusion").join(relpath),
            format: ModelFormat::SingleFile,
            sha256: sha.to_string(),
            hash,
            config: None,
        }
    }

    #[test]
    fn every_a1111_alias_resolves() {
        let a = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let b = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        let entries = vec![entry("sd15/dreamy.safetensors", a), entry("xl_base.safetensors", b)];
        for name in [
            "sd15/dreamy.safetensors [0123456789]",
            "sd15/dreamy.safetensors",
            "sd15\\dreamy.safetensors",
            "sd15/dreamy",
            "sd15_dreamy",
            "dreamy",
            "0123456789",
            a,
            "dreamy [0123456789]",
            "whatever [0123456789]",
            "drea",
        ] {
            assert_eq!(find_checkpoint(&entries, name).map(|e| e.relpath.as_str()), Some("sd15/dreamy.safetensors"), "{name}");
        }
        assert_eq!(find_checkpoint(&entries, "XL_BASE").map(|e| e.hash.as_str()), None, "names are case-sensitive except hashes");
        assert_eq!(find_checkpoint(&entries, "FEDCBA9876").map(|e| e.relpath.as_str()), Some("xl_base.safetensors"));
        for outside in ["../secret.safetensors", "/etc/passwd", "C:\\models\\x.safetensors", ""] {
            assert!(find_checkpoint(&entries, outside).is_none(), "{outside}");
        }
        assert!(is_path_like("../x") && is_path_like("/x") && is_path_like("a/../../x") && !is_path_like("a/b.safetensors"));
    }

    #[test]
    fn loras_resolve_by_name_alias_and_path() {
        let lora = |name: &str, alias: &str, relpath: &str| LoraEntry {
            name: name.into(),
            alias: alias.into(),
            relpath: relpath.into(),
            path: PathBuf::from("/m/Lora").join(relpath),
            metadata: Default::default(),
        };
        let entries = vec![lora("style_v2", "Fancy Style", "styles/style_v2.safetensors"), lora("detail", "detail", "detail.safetensors")];
        assert_eq!(find_lora(&entries, "style_v2").map(|e| e.name.as_str()), Some("style_v2"));
        assert_eq!(find_lora(&entries, "Fancy Style").map(|e| e.name.as_str()), Some("style_v2"));
        assert_eq!(find_lora(&entries, "styles/style_v2").map(|e| e.name.as_str()), Some("style_v2"));
        assert_eq!(find_lora(&entries, "styles/style_v2.safetensors").map(|e| e.name.as_str()), Some("style_v2"));
        assert!(find_lora(&entries, "../Lora/detail").is_none());
        assert!(is_builtin_vae("Automatic") && is_builtin_vae("None") && !is_builtin_vae("vae-ft-mse.safetensors"));
    }
}
