use matroska_cache::Dependencies;

#[derive(Dependencies)]
#[deps(id = "order_line")]
struct OrderLine {
    #[deps(key)]
    order: u32,
    #[deps(key)]
    line: u32,
}

fn main() {}
