//! Licences: which SPDX id a licence file's text is, and which SPDX id a card's licence (a
//! Hugging Face Hub licence id) means. Ids outside the SPDX list use `LicenseRef-` ids.

use crate::Source;

/// How much of a licence file is read: the identifying phrases are at the top.
const READ: usize = 64 * 1024;

/// Phrases (all of which must occur, in normalised text) and the licence they identify,
/// most specific first.
const SIGNATURES: &[(&[&str], &str)] = &[
    (&["gnu affero general public license", "version 3"], "AGPL-3.0-only"),
    (&["gnu lesser general public license", "version 3"], "LGPL-3.0-only"),
    (&["gnu lesser general public license", "version 2.1"], "LGPL-2.1-only"),
    (&["gnu general public license", "version 3"], "GPL-3.0-only"),
    (&["gnu general public license", "version 2"], "GPL-2.0-only"),
    (&["apache license", "version 2.0"], "Apache-2.0"),
    (&["mozilla public license", "2.0"], "MPL-2.0"),
    (&["eclipse public license", "2.0"], "EPL-2.0"),
    (&["boost software license", "version 1.0"], "BSL-1.0"),
    (&["attribution-noncommercial-sharealike 4.0"], "CC-BY-NC-SA-4.0"),
    (&["attribution-noncommercial-noderivatives 4.0"], "CC-BY-NC-ND-4.0"),
    (&["attribution-noncommercial 4.0"], "CC-BY-NC-4.0"),
    (&["attribution-sharealike 4.0"], "CC-BY-SA-4.0"),
    (&["attribution-noderivatives 4.0"], "CC-BY-ND-4.0"),
    (&["creative commons", "attribution 4.0 international"], "CC-BY-4.0"),
    (&["cc0 1.0 universal"], "CC0-1.0"),
    (&["this is free and unencumbered software released into the public domain"], "Unlicense"),
    (&["llama 2 community license agreement"], "LicenseRef-llama2"),
    (&["llama 3.3 community license agreement"], "LicenseRef-llama3.3"),
    (&["llama 3.2 community license agreement"], "LicenseRef-llama3.2"),
    (&["llama 3.1 community license agreement"], "LicenseRef-llama3.1"),
    (&["meta llama 3 community license agreement"], "LicenseRef-llama3"),
    (&["gemma terms of use"], "LicenseRef-gemma"),
    (&["creativeml open rail-m"], "LicenseRef-creativeml-openrail-m"),
    (&["bigscience open rail-m"], "LicenseRef-bigscience-openrail-m"),
    (&["bigscience rail license"], "LicenseRef-bigscience-bloom-rail-1.0"),
    (&["open rail"], "LicenseRef-openrail"),
    (&["permission is hereby granted, free of charge, to any person obtaining a copy"], "MIT"),
    (&["permission to use, copy, modify, and/or distribute this software for any purpose"], "ISC"),
    (&["redistribution and use in source and binary forms", "neither the name"], "BSD-3-Clause"),
    (&["redistribution and use in source and binary forms"], "BSD-2-Clause"),
];

/// Lower-cased, with runs of whitespace (line breaks in licence texts) as one space.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The SPDX id of a licence text, if it is one we know.
pub fn detect_text(text: &str) -> Option<&'static str> {
    let t = normalise(text);
    SIGNATURES.iter().find(|(phrases, _)| phrases.iter().all(|p| t.contains(p))).map(|(_, id)| *id)
}

/// The SPDX id of a licence file, reading only its beginning.
pub fn detect_file(src: &dyn Source) -> Option<String> {
    let mut buf = vec![0u8; READ.min(usize::try_from(src.len()).unwrap_or(READ))];
    let mut got = 0;
    while got < buf.len() {
        match src.read_at(got as u64, &mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    detect_text(&String::from_utf8_lossy(&buf[..got])).map(str::to_string)
}

/// Whether `id` is one of the SPDX License List ids this module produces (the others are
/// `LicenseRef-…` ids or ids passed through as written).
pub fn is_spdx_id(id: &str) -> bool {
    const IDS: &[&str] = &[
        "Apache-2.0",
        "MIT",
        "BSD-3-Clause",
        "BSD-2-Clause",
        "BSD-3-Clause-Clear",
        "ISC",
        "BSL-1.0",
        "EPL-2.0",
        "MPL-2.0",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "GPL-2.0-only",
        "GPL-2.0-or-later",
        "LGPL-3.0-only",
        "LGPL-2.1-only",
        "AGPL-3.0-only",
        "CC-BY-4.0",
        "CC-BY-SA-4.0",
        "CC-BY-NC-4.0",
        "CC-BY-NC-SA-4.0",
        "CC-BY-ND-4.0",
        "CC-BY-NC-ND-4.0",
        "CC0-1.0",
        "Unlicense",
        "WTFPL",
        "Artistic-2.0",
    ];
    IDS.contains(&id)
}

/// The SPDX id for a model card's licence: a Hugging Face Hub licence id (`apache-2.0`), or an
/// SPDX id already (any case). `None` for ids that name no particular licence (`other`).
pub fn from_card(id: &str) -> Option<String> {
    let lower = id.trim().to_ascii_lowercase();
    let spdx = match lower.as_str() {
        "apache-2.0" => "Apache-2.0",
        "mit" => "MIT",
        "bsd-3-clause" => "BSD-3-Clause",
        "bsd-2-clause" => "BSD-2-Clause",
        "bsd-3-clause-clear" => "BSD-3-Clause-Clear",
        "isc" => "ISC",
        "bsl-1.0" => "BSL-1.0",
        "epl-2.0" => "EPL-2.0",
        "mpl-2.0" => "MPL-2.0",
        "gpl-3.0" | "gpl-3.0-only" => "GPL-3.0-only",
        "gpl-3.0-or-later" => "GPL-3.0-or-later",
        "gpl-2.0" | "gpl-2.0-only" => "GPL-2.0-only",
        "gpl-2.0-or-later" => "GPL-2.0-or-later",
        "lgpl-3.0" | "lgpl-3.0-only" => "LGPL-3.0-only",
        "lgpl-2.1" | "lgpl-2.1-only" => "LGPL-2.1-only",
        "agpl-3.0" | "agpl-3.0-only" => "AGPL-3.0-only",
        "cc-by-4.0" => "CC-BY-4.0",
        "cc-by-sa-4.0" => "CC-BY-SA-4.0",
        "cc-by-nc-4.0" => "CC-BY-NC-4.0",
        "cc-by-nc-sa-4.0" => "CC-BY-NC-SA-4.0",
        "cc-by-nd-4.0" => "CC-BY-ND-4.0",
        "cc-by-nc-nd-4.0" => "CC-BY-NC-ND-4.0",
        "cc0-1.0" => "CC0-1.0",
        "unlicense" => "Unlicense",
        "wtfpl" => "WTFPL",
        "artistic-2.0" => "Artistic-2.0",
        "openrail" => "LicenseRef-openrail",
        "openrail++" => "LicenseRef-openrail++",
        "creativeml-openrail-m" => "LicenseRef-creativeml-openrail-m",
        "bigscience-openrail-m" => "LicenseRef-bigscience-openrail-m",
        "bigscience-bloom-rail-1.0" => "LicenseRef-bigscience-bloom-rail-1.0",
        "llama2" | "llama3" | "llama3.1" | "llama3.2" | "llama3.3" | "llama4" | "gemma" => {
            return Some(format!("LicenseRef-{lower}"));
        }
        "other" | "unknown" | "" => return None,
        _ => {
            // Already SPDX-shaped (letters, digits, '.', '-', '+'): keep it as written.
            let shaped = lower.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
            return shaped.then(|| id.trim().to_string());
        }
    };
    Some(spdx.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_texts_map_to_spdx_ids() {
        let apache =
            "                                 Apache License\n                           Version 2.0, January 2004\n";
        assert_eq!(detect_text(apache), Some("Apache-2.0"));
        let mit = "MIT License\n\nCopyright (c) 2026\n\nPermission is hereby granted, free of charge, to any person\nobtaining a copy of this software";
        assert_eq!(detect_text(mit), Some("MIT"));
        let bsd3 = "Redistribution and use in source and binary forms, with or without\nmodification ... 3. Neither the name of the copyright holder";
        assert_eq!(detect_text(bsd3), Some("BSD-3-Clause"));
        assert_eq!(detect_text("Redistribution and use in source and binary forms"), Some("BSD-2-Clause"));
        let agpl = "GNU AFFERO GENERAL PUBLIC LICENSE\n Version 3, 19 November 2007";
        assert_eq!(detect_text(agpl), Some("AGPL-3.0-only"));
        let gpl = "GNU GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007";
        assert_eq!(detect_text(gpl), Some("GPL-3.0-only"));
        assert_eq!(detect_text("Attribution-NonCommercial 4.0 International"), Some("CC-BY-NC-4.0"));
        assert_eq!(detect_text("LLAMA 2 COMMUNITY LICENSE AGREEMENT"), Some("LicenseRef-llama2"));
        assert_eq!(detect_text("All rights reserved."), None);
    }

    #[test]
    fn card_licences_map_to_spdx_ids() {
        assert_eq!(from_card("apache-2.0").as_deref(), Some("Apache-2.0"));
        assert_eq!(from_card("MIT").as_deref(), Some("MIT"));
        assert_eq!(from_card("gpl-3.0").as_deref(), Some("GPL-3.0-only"));
        assert_eq!(from_card("llama3.1").as_deref(), Some("LicenseRef-llama3.1"));
        assert_eq!(from_card("other"), None);
        assert_eq!(from_card("Zlib").as_deref(), Some("Zlib"));
        assert_eq!(from_card("not a licence!"), None);
    }
}
