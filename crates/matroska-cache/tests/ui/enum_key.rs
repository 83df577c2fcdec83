use matroska_cache::Dependencies;

#[derive(Dependencies)]
enum Block {
    Article {
        #[deps(key)]
        id: u32,
    },
}

fn main() {}
