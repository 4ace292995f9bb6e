//! The library registry: libraries, their functions, the LOAD / DELETE / FLUSH / RESTORE logic and conflict
//! policies. It knows the engine only through `LuaEngine`'s small interface. Every change is built aside and
//! swapped in, so a failed LOAD or RESTORE leaves the registry exactly as it was.

use std::collections::HashSet;

use hashbrown::HashTable;

use rfunc_core::library::parse_header;

use crate::engine::lua::check_function_name;
use crate::engine::{LuaEngine, Registered};
use crate::hash::{fnv1a, FnvBuild};
use crate::host;
use crate::rm::Ctx;

pub struct Library {
    pub name: String,
    /// The full code as given to LOAD, header included (what LIST WITHCODE and DUMP return).
    pub code: Vec<u8>,
    pub functions: Vec<Registered>,
    /// The library's DUMP entry, kept once built (for the `rdbcompression` setting it was built with).
    dump_entry: std::cell::RefCell<Option<(bool, std::rc::Rc<[u8]>)>>,
}

impl Library {
    /// This library's DUMP entry (opcode + RDB string), compressed per `compress`.
    pub fn dump_entry(&self, compress: bool) -> std::rc::Rc<[u8]> {
        let mut cached = self.dump_entry.borrow_mut();
        match &*cached {
            Some((c, e)) if *c == compress => e.clone(),
            _ => {
                let e: std::rc::Rc<[u8]> =
                    rfunc_core::payload::encode_entry(&self.code, compress).into();
                *cached = Some((compress, e.clone()));
                e
            }
        }
    }
}

/// Where a function lives: (library index, function index).
type FnPos = (u32, u32);

#[derive(Default)]
pub struct Registry {
    libraries: Vec<Library>,
    /// Function positions hashed by the lower-cased name and compared against the names in `libraries`
    /// (function names are case-insensitive): no second copy of the names.
    functions: HashTable<FnPos>,
}

/// The index hash of a function name: FNV-1a over its lower-cased bytes.
fn name_hash(name: &[u8]) -> u64 {
    fnv1a(None, name.iter().map(|b| b.to_ascii_lowercase()))
}

/// RESTORE policies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RestorePolicy {
    Append,
    Replace,
    Flush,
}

pub struct FunctionRef<'a> {
    pub library: &'a Library,
    pub function: &'a Registered,
}

impl Registry {
    pub fn libraries(&self) -> &[Library] {
        &self.libraries
    }

    pub fn function_count(&self) -> usize {
        // One index entry per function (names are unique across the registry, case-insensitively).
        self.functions.len()
    }

    pub fn library(&self, name: &str) -> Option<&Library> {
        self.libraries.iter().find(|l| l.name == name)
    }

    /// Case-insensitive function lookup.
    pub fn function(&self, name: &[u8]) -> Option<FunctionRef<'_>> {
        let libraries = &self.libraries;
        let &(li, fi) = self.functions.find(name_hash(name), |&(li, fi)| {
            libraries[li as usize].functions[fi as usize]
                .name
                .as_bytes()
                .eq_ignore_ascii_case(name)
        })?;
        let library = &libraries[li as usize];
        Some(FunctionRef {
            library,
            function: &library.functions[fi as usize],
        })
    }

    /// Adds the functions of library `li` to the index.
    fn index_library(&mut self, li: usize) {
        let libraries = &self.libraries;
        for (fi, f) in libraries[li].functions.iter().enumerate() {
            self.functions.insert_unique(
                name_hash(f.name.as_bytes()),
                (li as u32, fi as u32),
                |&(l, f)| name_hash(libraries[l as usize].functions[f as usize].name.as_bytes()),
            );
        }
    }

    /// Removes the functions of library `li` from the index.
    fn unindex_library(&mut self, li: usize) {
        for fi in 0..self.libraries[li].functions.len() {
            let h = name_hash(self.libraries[li].functions[fi].name.as_bytes());
            if let Ok(entry) = self
                .functions
                .find_entry(h, |&pos| pos == (li as u32, fi as u32))
            {
                entry.remove();
            }
        }
    }

    fn reindex(&mut self) {
        self.functions.clear();
        for li in 0..self.libraries.len() {
            self.index_library(li);
        }
    }

    /// Removes every library, releasing their functions in the engine.
    pub fn clear(&mut self, engine: Option<&mut LuaEngine>) {
        if let Some(engine) = engine {
            for lib in &self.libraries {
                engine.release(&lib.functions);
            }
        }
        self.libraries.clear();
        self.functions.clear();
    }

    pub fn delete(&mut self, engine: &mut LuaEngine, name: &str) -> Result<(), &'static str> {
        let i = self
            .libraries
            .iter()
            .position(|l| l.name == name)
            .ok_or("Library not found")?;
        let lib = self.libraries.remove(i);
        engine.release(&lib.functions);
        self.reindex();
        Ok(())
    }

    /// FUNCTION LOAD [REPLACE]: returns the library name.
    pub fn load(
        &mut self,
        engine: &mut LuaEngine,
        ctx: Ctx,
        code: &[u8],
        replace: bool,
        timeout: bool,
    ) -> Result<String, Vec<u8>> {
        let header = parse_header(code).map_err(|e| e.message())?;
        if !replace && self.library(&header.name).is_some() {
            return Err(format!("Library '{}' already exists", header.name).into_bytes());
        }
        let lib = compile(engine, ctx, code, &header.name, header.body_offset, timeout)?;
        // A function name may not belong to another library (the one being replaced does not count).
        for f in &lib.functions {
            if let Some(existing) = self.function(f.name.as_bytes()) {
                if existing.library.name != lib.name {
                    let msg = format!("Function {} already exists", f.name).into_bytes();
                    engine.release(&lib.functions);
                    return Err(msg);
                }
            }
        }
        let name = lib.name.clone();
        let i = match self.libraries.iter().position(|l| l.name == name) {
            Some(i) => {
                self.unindex_library(i);
                let old = std::mem::replace(&mut self.libraries[i], lib);
                engine.release(&old.functions);
                i
            }
            None => {
                self.libraries.push(lib);
                self.libraries.len() - 1
            }
        };
        self.index_library(i);
        Ok(name)
    }

    /// FUNCTION RESTORE: compiles every library of the payload, then joins them per policy. `trailing` is a
    /// payload error found after the last library: it is reported if every library before it compiled.
    pub fn restore(
        &mut self,
        engine: &mut LuaEngine,
        ctx: Ctx,
        codes: Vec<Vec<u8>>,
        trailing: Option<Vec<u8>>,
        policy: RestorePolicy,
        timeout: bool,
    ) -> Result<RestorePlan, Vec<u8>> {
        let new = compile_payload(engine, ctx, codes, trailing, timeout)?;
        let plan = match self.plan_restore(&new, policy) {
            Ok(plan) => plan,
            Err(e) => {
                for l in &new {
                    engine.release(&l.functions);
                }
                return Err(e);
            }
        };
        match policy {
            RestorePolicy::Flush => self.clear(Some(engine)),
            RestorePolicy::Replace => {
                let new_names: HashSet<&str, FnvBuild> =
                    new.iter().map(|n| n.name.as_str()).collect();
                let (gone, kept): (Vec<Library>, Vec<Library>) =
                    std::mem::take(&mut self.libraries)
                        .into_iter()
                        .partition(|l| new_names.contains(l.name.as_str()));
                for l in &gone {
                    engine.release(&l.functions);
                }
                self.libraries = kept;
            }
            RestorePolicy::Append => {}
        }
        self.libraries.extend(new);
        self.reindex();
        Ok(plan)
    }

    /// What joining `new` into the registry with `policy` does, or the server's conflict error.
    pub fn plan_restore(
        &self,
        new: &[Library],
        policy: RestorePolicy,
    ) -> Result<RestorePlan, Vec<u8>> {
        let mut plan = RestorePlan::default();
        if policy == RestorePolicy::Flush {
            plan.removed = self.libraries.iter().map(|l| l.name.clone()).collect();
            plan.added = new.iter().map(|l| l.name.clone()).collect();
            return Ok(plan);
        }
        let existing: HashSet<&str, FnvBuild> =
            self.libraries.iter().map(|l| l.name.as_str()).collect();
        if policy == RestorePolicy::Append {
            if let Some(dup) = new.iter().find(|n| existing.contains(n.name.as_str())) {
                return Err(format!("Library {} already exists", dup.name).into_bytes());
            }
        }
        // Libraries that stay: all current ones, minus those REPLACE swaps out.
        let new_names: HashSet<&str, FnvBuild> = new.iter().map(|n| n.name.as_str()).collect();
        let replaced = |name: &str| policy == RestorePolicy::Replace && new_names.contains(name);
        for lib in new {
            for f in &lib.functions {
                if let Some(existing) = self.function(f.name.as_bytes()) {
                    if !replaced(&existing.library.name) {
                        return Err(format!("Function {} already exists", f.name).into_bytes());
                    }
                }
            }
        }
        for lib in new {
            if existing.contains(lib.name.as_str()) {
                plan.replaced.push(lib.name.clone());
            } else {
                plan.added.push(lib.name.clone());
            }
        }
        Ok(plan)
    }

    /// Zeroes every function's statistics.
    pub fn reset_stats(&self) {
        for lib in &self.libraries {
            for f in &lib.functions {
                f.stats.reset();
            }
        }
    }
}

/// What a RESTORE changes (reported by RESTORE ... DRYRUN).
#[derive(Default, Debug)]
pub struct RestorePlan {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
}

/// Compiles the libraries of a payload in order (like the server, which compiles as it parses), refusing two
/// libraries of one name or one function name in two libraries of the payload.
pub fn compile_payload(
    engine: &mut LuaEngine,
    ctx: Ctx,
    codes: Vec<Vec<u8>>,
    trailing: Option<Vec<u8>>,
    timeout: bool,
) -> Result<Vec<Library>, Vec<u8>> {
    let mut new: Vec<Library> = Vec::with_capacity(codes.len());
    // Names seen so far in the payload (functions lower-cased): a payload of thousands of libraries is checked in
    // linear time.
    let mut library_names: HashSet<String, FnvBuild> = HashSet::default();
    let mut function_names: HashSet<Vec<u8>, FnvBuild> = HashSet::default();
    let fail = |engine: &mut LuaEngine, new: &[Library], e: Vec<u8>| {
        for l in new {
            engine.release(&l.functions);
        }
        Err(e)
    };
    for code in codes {
        let header = match parse_header(&code) {
            Ok(h) => h,
            Err(e) => return fail(engine, &new, e.message()),
        };
        if library_names.contains(&header.name) {
            return fail(
                engine,
                &new,
                format!("Library '{}' already exists", header.name).into_bytes(),
            );
        }
        let lib = match compile(
            engine,
            ctx,
            &code,
            &header.name,
            header.body_offset,
            timeout,
        ) {
            Ok(lib) => lib,
            Err(e) => return fail(engine, &new, e),
        };
        let clash = lib
            .functions
            .iter()
            .find(|f| function_names.contains(f.name.to_ascii_lowercase().as_bytes()));
        if let Some(f) = clash {
            let msg = format!("Function {} already exists", f.name).into_bytes();
            engine.release(&lib.functions);
            return fail(engine, &new, msg);
        }
        library_names.insert(lib.name.clone());
        function_names.extend(
            lib.functions
                .iter()
                .map(|f| f.name.to_ascii_lowercase().into_bytes()),
        );
        new.push(lib);
    }
    if let Some(e) = trailing {
        return fail(engine, &new, e);
    }
    Ok(new)
}

/// Compiles one library and applies the checks the server makes on what it registered.
pub fn compile(
    engine: &mut LuaEngine,
    ctx: Ctx,
    code: &[u8],
    name: &str,
    body_offset: usize,
    timeout: bool,
) -> Result<Library, Vec<u8>> {
    let mut functions = engine.load_library(ctx, &code[body_offset..], timeout)?;
    // Registered in a growing vector: keep only what is used (most libraries hold one or two functions).
    functions.shrink_to_fit();
    if functions.is_empty() {
        return Err(b"No functions registered".to_vec());
    }
    // 8.1+ check names after the body ran, in registration order (8.0 hosts checked them at registration).
    // In-library duplicates are refused case-insensitively on every host (SPEC rule 2).
    if host::get().late_name_checks() {
        for (i, f) in functions.iter().enumerate() {
            if let Err(msg) = check_function_name(&functions[..i], f.name.as_bytes()) {
                engine.release(&functions);
                return Err(msg.as_bytes().to_vec());
            }
        }
    }
    Ok(Library {
        name: name.to_string(),
        code: code.to_vec(),
        functions,
        dump_entry: Default::default(),
    })
}
