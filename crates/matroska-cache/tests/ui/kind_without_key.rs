use matroska_cache::Dependencies;

#[derive(Dependencies)]
#[deps(id = "article")]
struct Article {
    id: u32,
}

fn main() {}
