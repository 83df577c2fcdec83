use matroska_cache::Dependencies;

#[derive(Dependencies)]
struct Article {
    #[deps(key)]
    id: u32,
}

fn main() {}
