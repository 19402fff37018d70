//! Checksum lists (`iso_checksum: "file:…"`): `SHA256SUMS`-style files,
//! read as go-getter reads them for Packer.
//!
//! A line is GNU style (`HASH  name`, `HASH *name`), BSD style
//! (`SHA256 (name) = HASH`), or a digest alone (it applies to any file).
//! GNU lines get their algorithm from the digest's length. The source's
//! line is the first whose name is the source's file name, with `*` or `?`
//! before it, or its path relative to the list's directory (with or without
//! `./`).

use super::Digest;

/// What the list says of the file at `source_path` (a URL path or a local
/// path) when the list itself is at `list_path`; `None` when no line names
/// it.
pub fn find(text: &str, source_path: &str, list_path: &str) -> Option<Digest> {
    let file_name = base_name(source_path);
    let mut names = vec![
        file_name.to_string(),
        format!("*{file_name}"),
        format!("?{file_name}"),
    ];
    if let Some(relative) = relative_to_dir(source_path, list_path) {
        names.push(format!("./{relative}"));
        names.push(relative);
    }
    names.push(source_path.to_string());
    text.lines()
        .filter_map(parse_line)
        .find_map(|(digest, name)| {
            let applies = match name {
                None => true,
                Some(name) => names.iter().any(|n| !n.is_empty() && n == name),
            };
            applies.then_some(digest)
        })
}

/// One line: its digest and the file it names (`None`: any file). Lines
/// that are not checksums (comments, PGP armour) give `None`.
fn parse_line(line: &str) -> Option<(Digest, Option<&str>)> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts.as_slice() {
        [] => None,
        [algorithm, name, "=", hex] => {
            let name = name.strip_prefix('(')?.strip_suffix(')')?;
            if name.is_empty() {
                return None;
            }
            Some((Digest::typed(algorithm, hex)?, Some(name)))
        }
        [hex, name] => Some((Digest::from_length(hex)?, Some(name))),
        [hex, ..] => Some((Digest::from_length(hex)?, None)),
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `source` relative to the directory `list` is in, when it is below it.
fn relative_to_dir(source: &str, list: &str) -> Option<String> {
    let dir = list.rsplit_once('/').map_or("", |(dir, _)| dir);
    let rest = source.strip_prefix(dir)?.strip_prefix('/')?;
    (!rest.is_empty()).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const B: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sha256(hex: &str) -> Option<Digest> {
        Some(Digest::Sha256(hex.into()))
    }

    #[test]
    fn gnu_lines_match_by_file_name_text_or_binary() {
        let list = format!("{A}  other.iso\n{B} *focal.img\n");
        assert_eq!(
            find(&list, "/releases/focal.img", "/releases/SHA256SUMS"),
            sha256(B)
        );
        assert_eq!(
            find(&list, "/releases/other.iso", "/releases/SHA256SUMS"),
            sha256(A)
        );
        assert_eq!(
            find(&list, "/releases/missing.iso", "/releases/SHA256SUMS"),
            None
        );
        let shasum_p = format!("{A} ?focal.img\n");
        assert_eq!(find(&shasum_p, "/x/focal.img", "/x/SUMS"), sha256(A));
    }

    #[test]
    fn bsd_lines_name_their_algorithm() {
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        let list = format!("SHA256 (other.img) = {A}\nMD5 (disk.img) = {md5}\n");
        assert_eq!(
            find(&list, "/d/disk.img", "/d/MD5SUMS"),
            Some(Digest::Md5(md5.into()))
        );
        assert_eq!(find(&list, "/d/other.img", "/d/SUMS"), sha256(A));
        assert_eq!(
            find("CRC32 (disk.img) = abcd\n", "/d/disk.img", "/d/SUMS"),
            None
        );
    }

    #[test]
    fn relative_paths_below_the_list_match() {
        let list = format!("{A}  ./amd64/disk.img\n{B}  arm64/disk.img\n");
        assert_eq!(find(&list, "/r/amd64/disk.img", "/r/SHA256SUMS"), sha256(A));
        assert_eq!(find(&list, "/r/arm64/disk.img", "/r/SHA256SUMS"), sha256(B));
    }

    #[test]
    fn the_algorithm_follows_the_digest_length() {
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let sha512 = "d".repeat(128);
        let list = format!("{sha1}  one.img\n{sha512}  two.img\nzz  three.img\n");
        assert_eq!(
            find(&list, "/one.img", "/SUMS"),
            Some(Digest::Sha1(sha1.into()))
        );
        assert_eq!(
            find(&list, "/two.img", "/SUMS"),
            Some(Digest::Sha512(sha512))
        );
        assert_eq!(find(&list, "/three.img", "/SUMS"), None);
    }

    #[test]
    fn a_lone_digest_applies_to_any_file_and_junk_is_skipped() {
        let list = format!("-----BEGIN PGP SIGNED MESSAGE-----\n\n# comment\n{A}\n");
        assert_eq!(find(&list, "/any.img", "/SUMS"), sha256(A));
    }
}
