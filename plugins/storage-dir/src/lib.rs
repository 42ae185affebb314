//! Directory storage pools, as libvirt's `dir` backend: a pool is a directory, a volume is a
//! file in it, in raw, qcow2, qed, vmdk or vdi.
//!
//! The plugin sees only the pool's target directory, which the host opens for each call (the
//! host also creates that directory for `pool-build` and removes it after `pool-delete`). It
//! lists and removes files itself, through WASI, and runs `qemu-img` to make, copy, resize and
//! measure images, and `df` for the file system's numbers. A volume's key is its path, as in
//! libvirt. Backing files must be volumes of the same pool, checked link by link before any
//! verb that reads a chain (create with a backing volume, clone, resize, wipe), so neither a
//! definition nor an uploaded image can make qemu-img read a file the pool does not hold.
//! (The plugin runs qemu-img with the host's privileges: its grant is as wide as that tool.)

use virtwasm_sdk::types::*;
use virtwasm_sdk::{Hypervisor, Network, Storage, VerbResult, error, export_driver, run_checked};

/// Formats this driver creates (the ones `qemu-img create` writes that libvirt users use).
const FORMATS: &[&str] = &["raw", "qcow2", "qed", "vmdk", "vdi"];

/// How long one `qemu-img` may run: a clone copies the whole image.
const QEMU_IMG_TIMEOUT_MS: u32 = 30 * 60 * 1000;

struct DirPool;

impl Hypervisor for DirPool {}
impl Network for DirPool {}

impl Storage for DirPool {
    fn pool_build(pool: PoolDef, _overwrite: bool) -> VerbResult<()> {
        // The host made the directory; building checks that this driver can use it.
        read_dir(target(&pool)?).map(|_| ())
    }

    fn pool_start(pool: PoolDef) -> VerbResult<PoolInfo> {
        read_dir(target(&pool)?)?;
        Self::get_pool_info(pool, vec![])
    }

    fn pool_stop(_pool: PoolDef) -> VerbResult<()> {
        Ok(())
    }

    fn pool_delete(pool: PoolDef) -> VerbResult<()> {
        let dir = target(&pool)?;
        if !read_dir(dir)?.is_empty() {
            // libvirt's words: the directory is only removed once empty.
            return Err(error(
                ErrorKind::OperationFailed,
                format!("failed to remove pool '{dir}': Directory not empty"),
            ));
        }
        Ok(())
    }

    fn pool_refresh(pool: PoolDef, _known: Vec<VolumeDef>) -> VerbResult<Vec<VolumeDef>> {
        let dir = target(&pool)?;
        let mut volumes = Vec::new();
        for name in read_dir(dir)? {
            let path = format!("{dir}/{name}");
            // libvirt lists regular files only; a file qemu-img cannot read is skipped too
            // (and said in the log), never allowed to hide the rest of the pool.
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {}
                _ => continue,
            }
            match probe(&path) {
                Ok(image) => volumes.push(image.volume(&name, &path)),
                Err(e) => virtwasm_sdk::log::warn(&format!(
                    "pool '{}': skipping '{path}': {}",
                    pool.name, e.message
                )),
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    fn get_pool_info(pool: PoolDef, _volumes: Vec<VolumeDef>) -> VerbResult<PoolInfo> {
        let dir = target(&pool)?;
        // `df` reports the numbers libvirt takes from statvfs: size, blocks in use, and what
        // an unprivileged writer may still use.
        let out = run_checked("df", &["-B1", "--output=size,used,avail", dir], 30_000)?;
        let text = String::from_utf8_lossy(&out);
        let numbers: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let [capacity, allocation, available] = numbers[..] else {
            return Err(error(
                ErrorKind::OperationFailed,
                format!("cannot read df's answer for '{dir}': {text:?}"),
            ));
        };
        Ok(PoolInfo {
            state: PoolState::Running,
            capacity,
            allocation,
            available,
        })
    }

    fn vol_create(pool: PoolDef, vol: VolumeDef) -> VerbResult<VolumeDef> {
        let dir = target(&pool)?;
        let path = volume_path(dir, &vol.name)?;
        let format = vol.format.clone().unwrap_or_else(|| "raw".into());
        check_format(&format)?;
        not_there_yet(&vol.name, &path)?;
        let mut args = vec![
            "create".to_string(),
            "-q".into(),
            "-f".into(),
            format.clone(),
        ];
        if let Some(backing) = &vol.backing_path {
            let backing = inside_pool(dir, backing)?;
            chain_inside_pool(dir, &backing)?;
            let backing_format = match &vol.backing_format {
                Some(f) => f.clone(),
                None => probe(&backing)?.format,
            };
            args.extend(["-b".into(), backing, "-F".into(), backing_format]);
        }
        args.push(path.clone());
        // With a backing file a capacity of 0 means "the backing file's size".
        if vol.capacity > 0 || vol.backing_path.is_none() {
            args.push(vol.capacity.to_string());
        }
        qemu_img(&args)?;
        let image = probe(&path)?;
        Ok(VolumeDef {
            target_permissions: vol.target_permissions.clone(),
            ..image.volume(&vol.name, &path)
        })
    }

    fn vol_clone(pool: PoolDef, source: VolumeDef, vol: VolumeDef) -> VerbResult<VolumeDef> {
        let dir = target(&pool)?;
        let from = inside_pool(dir, &volume_path(dir, &source.name)?)?;
        let path = volume_path(dir, &vol.name)?;
        not_there_yet(&vol.name, &path)?;
        chain_inside_pool(dir, &from)?;
        let source_format = probe(&from)?.format;
        let format = vol.format.clone().unwrap_or_else(|| source_format.clone());
        check_format(&format)?;
        // -U: the source may be in use by a running guest (as libvirt, a clone of a live
        // disk is the user's call).
        qemu_img(&[
            "convert".into(),
            "-U".into(),
            "-f".into(),
            source_format,
            "-O".into(),
            format,
            from,
            path.clone(),
        ])?;
        Ok(probe(&path)?.volume(&vol.name, &path))
    }

    fn vol_delete(pool: PoolDef, vol: VolumeDef) -> VerbResult<()> {
        let path = volume_path(target(&pool)?, &vol.name)?;
        std::fs::remove_file(&path).map_err(|e| {
            error(
                ErrorKind::OperationFailed,
                format!("cannot unlink file '{path}': {}", io_text(&e)),
            )
        })
    }

    fn vol_resize(
        pool: PoolDef,
        vol: VolumeDef,
        capacity: u64,
        allow_shrink: bool,
    ) -> VerbResult<VolumeDef> {
        let dir = target(&pool)?;
        let path = volume_path(dir, &vol.name)?;
        chain_inside_pool(dir, &path)?;
        let image = probe(&path)?;
        if capacity < image.capacity && !allow_shrink {
            return Err(error(
                ErrorKind::InvalidArgument,
                "invalid argument: Can't shrink capacity below current capacity unless shrink flag explicitly specified",
            ));
        }
        let mut args = vec!["resize".to_string(), "-q".into(), "-f".into(), image.format];
        if capacity < image.capacity {
            args.push("--shrink".into());
        }
        args.extend([path.clone(), capacity.to_string()]);
        qemu_img(&args)?;
        Ok(probe(&path)?.volume(&vol.name, &path))
    }

    fn vol_wipe(pool: PoolDef, vol: VolumeDef) -> VerbResult<()> {
        let dir = target(&pool)?;
        let path = volume_path(dir, &vol.name)?;
        let image = probe(&path)?;
        if image.format == "raw" {
            // Cutting the file to nothing and back leaves the same size of zeroes, without
            // writing them (the file system hands back zeroed blocks).
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_error("cannot open", &path, &e))?;
            f.set_len(0)
                .and_then(|_| f.set_len(image.capacity))
                .and_then(|_| f.sync_all())
                .map_err(|e| io_error("cannot wipe", &path, &e))?;
            return Ok(());
        }
        // An image format has metadata that zeroes would destroy: make it anew, empty, with
        // the same size and backing file (which must be the pool's: `create -b` opens it).
        chain_inside_pool(dir, &path)?;
        let mut args = vec![
            "create".to_string(),
            "-q".into(),
            "-f".into(),
            image.format.clone(),
        ];
        if let Some(backing) = &image.backing {
            args.extend(["-b".into(), backing.clone()]);
            if let Some(f) = &image.backing_format {
                args.extend(["-F".into(), f.clone()]);
            }
        }
        args.extend([path.clone(), image.capacity.to_string()]);
        std::fs::remove_file(&path).map_err(|e| io_error("cannot wipe", &path, &e))?;
        qemu_img(&args)
    }

    fn vol_info(pool: PoolDef, vol: VolumeDef) -> VerbResult<VolumeInfo> {
        let path = volume_path(target(&pool)?, &vol.name)?;
        let image = probe(&path)?;
        Ok(VolumeInfo {
            volume_type: VolumeType::File,
            capacity: image.capacity,
            allocation: image.allocation,
        })
    }

    fn vol_data_path(pool: PoolDef, vol: VolumeDef, _writable: bool) -> VerbResult<String> {
        let path = volume_path(target(&pool)?, &vol.name)?;
        std::fs::metadata(&path).map_err(|e| io_error("cannot open volume", &path, &e))?;
        Ok(path)
    }
}

export_driver!(DirPool);

/// What `qemu-img info` says of an image.
struct Image {
    format: String,
    capacity: u64,
    allocation: u64,
    backing: Option<String>,
    backing_format: Option<String>,
}

impl Image {
    fn volume(&self, name: &str, path: &str) -> VolumeDef {
        VolumeDef {
            name: name.to_string(),
            key: Some(path.to_string()),
            capacity: self.capacity,
            allocation: Some(self.allocation),
            target_path: Some(path.to_string()),
            format: Some(self.format.clone()),
            target_permissions: None,
            backing_path: self.backing.clone(),
            backing_format: self.backing_format.clone(),
        }
    }
}

/// The pool's directory, as its definition names it.
fn target(pool: &PoolDef) -> VerbResult<&str> {
    pool.target_path
        .as_deref()
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            error(
                ErrorKind::InvalidArgument,
                format!("storage pool '{}' has no <target><path>", pool.name),
            )
        })
}

/// Refuses a new volume whose file (or anything else) is at `path` already: a volume is
/// never written over.
fn not_there_yet(name: &str, path: &str) -> VerbResult<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(error(
            ErrorKind::AlreadyExists,
            format!("operation failed: storage vol '{name}' already exists at '{path}'"),
        ));
    }
    Ok(())
}

/// The file of volume `name` in `dir`; a name is one path component.
fn volume_path(dir: &str, name: &str) -> VerbResult<String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(error(
            ErrorKind::InvalidArgument,
            format!("volume name '{name}' must be a file name, without '/'"),
        ));
    }
    Ok(format!("{dir}/{name}"))
}

/// `path` when it names a file directly in the pool's directory; a backing file elsewhere
/// would let a definition read what the pool does not hold.
fn inside_pool(dir: &str, path: &str) -> VerbResult<String> {
    let name = path
        .strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|n| !n.is_empty() && !n.contains('/') && *n != "..")
        .ok_or_else(|| {
            error(
                ErrorKind::InvalidArgument,
                format!(
                    "backing store '{path}' is not a volume of this pool ('{dir}'): this driver takes backing files from the same pool"
                ),
            )
        })?;
    let path = volume_path(dir, name)?;
    // Opened through the sandbox, which refuses a link that leads out of the directory.
    std::fs::File::open(&path).map_err(|e| io_error("cannot open backing store", &path, &e))?;
    Ok(path)
}

/// How many backing files a chain may have before the driver stops following it.
const MAX_CHAIN: usize = 16;

/// Refuses an image whose backing chain leaves the pool: `qemu-img convert`, `create -b` and a
/// guest using the volume read every file of the chain. Each link is read with `qemu-img info`
/// of that one file (which does not open its backing file), so nothing outside the pool is
/// ever opened.
fn chain_inside_pool(dir: &str, path: &str) -> VerbResult<()> {
    let mut image = probe(path)?;
    let mut seen = 0;
    while let Some(backing) = image.backing.clone() {
        seen += 1;
        if seen > MAX_CHAIN {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!("'{path}' has more than {MAX_CHAIN} backing files"),
            ));
        }
        let inside = inside_pool(dir, &backing).map_err(|_| {
            error(
                ErrorKind::InvalidArgument,
                format!(
                    "'{path}' is backed by '{backing}', which is not a volume of this pool ('{dir}'): this driver reads no files outside the pool"
                ),
            )
        })?;
        image = probe(&inside)?;
    }
    Ok(())
}

fn check_format(format: &str) -> VerbResult<()> {
    if FORMATS.contains(&format) {
        return Ok(());
    }
    Err(error(
        ErrorKind::InvalidArgument,
        format!(
            "unsupported volume format '{format}' (this driver creates {})",
            FORMATS.join(", ")
        ),
    ))
}

/// The names in a directory, sorted.
fn read_dir(dir: &str) -> VerbResult<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("cannot open directory", dir, &e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Reads an image's format and numbers with `qemu-img info` (-U: a running guest may hold it).
fn probe(path: &str) -> VerbResult<Image> {
    let out = run_checked(
        "qemu-img",
        &["info", "-U", "--output=json", path],
        QEMU_IMG_TIMEOUT_MS,
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        error(
            ErrorKind::OperationFailed,
            format!("cannot read qemu-img's answer for '{path}': {e}"),
        )
    })?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Ok(Image {
        format: text("format").unwrap_or_else(|| "raw".into()),
        capacity: v.get("virtual-size").and_then(|x| x.as_u64()).unwrap_or(0),
        allocation: v.get("actual-size").and_then(|x| x.as_u64()).unwrap_or(0),
        backing: text("full-backing-filename").or_else(|| text("backing-filename")),
        backing_format: text("backing-filename-format"),
    })
}

fn qemu_img(args: &[String]) -> VerbResult<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_checked("qemu-img", &args, QEMU_IMG_TIMEOUT_MS).map(|_| ())
}

fn io_error(what: &str, path: &str, e: &std::io::Error) -> Error {
    error(
        ErrorKind::OperationFailed,
        format!("{what} '{path}': {}", io_text(e)),
    )
}

/// An I/O error as `strerror` says it (libvirt's wording), without Rust's "(os error N)".
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
