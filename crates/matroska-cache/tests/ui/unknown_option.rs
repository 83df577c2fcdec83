use matroska_cache::Dependencies;

#[derive(Dependencies)]
#[deps(id = "article")]
struct Article {
    #[deps(key)]
    id: u32,
    #[deps(nested)]
    tags: Vec<String>,
}

fn main() {}
