; llvm.global_ctors / llvm.global_dtors under remote MCJIT: lli does not run them in the
; executor (neither does lli-child-target's session), so main sees @g == 0 and "init" /
; "fini" are never printed. Exit code: @g (0).
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]
@llvm.global_dtors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @fini, ptr null }]
@g = global i32 0
@s_init = private unnamed_addr constant [6 x i8] c"init\0A\00"
@s_fini = private unnamed_addr constant [6 x i8] c"fini\0A\00"
@s_main = private unnamed_addr constant [9 x i8] c"main %d\0A\00"

declare i32 @printf(ptr, ...)

define void @init() {
  store i32 5, ptr @g
  call i32 (ptr, ...) @printf(ptr @s_init)
  ret void
}

define void @fini() {
  call i32 (ptr, ...) @printf(ptr @s_fini)
  ret void
}

define i32 @main() {
  %v = load i32, ptr @g
  call i32 (ptr, ...) @printf(ptr @s_main, i32 %v)
  ret i32 %v
}
