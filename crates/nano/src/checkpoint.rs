//! A training checkpoint is several files (weights, optimizer moments, `state.json`). Each file
//! is written atomically, but a process killed between two of them would leave one step's
//! weights beside another step's state and optimizer, and a resumed run would silently train a
//! different model. So a checkpoint is committed as a whole: every file is first written under a
//! staged name, then a commit marker is written, then the files move into place and the marker
//! goes. Opening a work folder finishes a committed checkpoint that a kill interrupted and drops
//! an uncommitted one, so the files in place always belong to one step.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{NanoError, Result};

/// Staged files are named `next-NAME` beside `NAME`.
const STAGED: &str = "next-";
const MARKER: &str = "checkpoint.commit";

/// A work folder's checkpoint files.
pub(crate) struct Paths {
    dir: PathBuf,
}

impl Paths {
    /// Opens `dir` (created if missing), settling any checkpoint a kill interrupted.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| NanoError::io(dir, e))?;
        let paths = Self { dir: dir.to_path_buf() };
        paths.settle()?;
        Ok(paths)
    }

    /// The committed file `name`, to read.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where the next checkpoint writes `name` before it is committed.
    pub(crate) fn staged(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{STAGED}{name}"))
    }

    /// Commits the staged files with `state` as the new `state.json`.
    pub(crate) fn commit(&self, state: &impl Serialize) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).expect("the training state serialises");
        write_atomically(&self.staged("state.json"), &bytes)?;
        write_atomically(&self.file(MARKER), b"")?;
        self.settle()
    }

    /// With a commit marker, moves every staged file into place (a rename is all a finished
    /// file needs, so this completes a commit that a kill interrupted); without one, removes the
    /// staged files, leaving the last committed checkpoint as it was.
    fn settle(&self) -> Result<()> {
        let marker = self.file(MARKER);
        let committed = marker.is_file();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| NanoError::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| NanoError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(target) = name.to_str().and_then(|n| n.strip_prefix(STAGED)) else { continue };
            let staged = entry.path();
            // A `.partial` file is one being written: never part of a commit.
            if committed && !target.ends_with(".partial") {
                std::fs::rename(&staged, self.file(target)).map_err(|e| NanoError::io(&staged, e))?;
            } else {
                std::fs::remove_file(&staged).map_err(|e| NanoError::io(&staged, e))?;
            }
        }
        if committed {
            std::fs::remove_file(&marker).map_err(|e| NanoError::io(&marker, e))?;
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| NanoError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| NanoError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// The folder after a first checkpoint: `w.safetensors` "1" and `state.json` {"step":1}.
    fn first_checkpoint(dir: &Path) -> Paths {
        let paths = Paths::open(dir).unwrap();
        std::fs::write(paths.staged("w.safetensors"), "1").unwrap();
        paths.commit(&serde_json::json!({"step": 1})).unwrap();
        paths
    }

    #[test]
    fn a_commit_moves_every_staged_file_into_place() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = first_checkpoint(tmp.path());
        assert_eq!(read(&paths.file("w.safetensors")), "1");
        assert!(read(&paths.file("state.json")).contains("\"step\": 1"));
        let mut left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["state.json", "w.safetensors"], "nothing staged or marked is left");
    }

    #[test]
    fn a_checkpoint_killed_before_its_commit_leaves_the_last_one_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = first_checkpoint(tmp.path());
        // Killed after writing the second checkpoint's weights, before its state and marker.
        std::fs::write(paths.staged("w.safetensors"), "2").unwrap();
        std::fs::write(paths.staged("opt.safetensors.partial"), "half").unwrap();
        let reopened = Paths::open(tmp.path()).unwrap();
        assert_eq!(read(&reopened.file("w.safetensors")), "1");
        assert!(read(&reopened.file("state.json")).contains("\"step\": 1"));
        assert!(!reopened.staged("w.safetensors").exists() && !reopened.staged("opt.safetensors.partial").exists());
    }

    #[test]
    fn a_commit_killed_while_moving_files_is_finished_on_opening() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = first_checkpoint(tmp.path());
        // Killed after the marker and one of the moves: the weights of step 2 are in place,
        // its state is still staged.
        std::fs::write(paths.staged("state.json"), "{\"step\": 2}").unwrap();
        std::fs::write(paths.file(MARKER), "").unwrap();
        std::fs::write(paths.file("w.safetensors"), "2").unwrap();
        let reopened = Paths::open(tmp.path()).unwrap();
        assert_eq!(read(&reopened.file("w.safetensors")), "2");
        assert!(read(&reopened.file("state.json")).contains("\"step\": 2"));
        assert!(!reopened.file(MARKER).exists());
    }
}
