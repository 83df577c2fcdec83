use matroska_cache::Dependencies;

struct Html(String);

#[derive(Dependencies)]
#[deps(id = "article")]
struct Article {
    #[deps(key)]
    id: u32,
    rendered: Html,
}

fn main() {}
