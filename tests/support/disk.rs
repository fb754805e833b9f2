//! A small disk that tests can fill up: a tmpfs mounted over a directory.

use std::path::Path;

/// A tmpfs mounted over a directory for the test's lifetime.
pub struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` where mounting is not permitted (not root, or a container
    /// without CAP_SYS_ADMIN).
    pub fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Self(dir.to_path_buf()))
    }

    /// Fills the disk with a file until writing fails; returns the file.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_data())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
