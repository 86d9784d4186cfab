; Remote MCJIT with several sections: recursion, a function-pointer table in writable data,
; a zero-initialized array (.bss), read-only strings, libc calls (malloc/memset/strlen/free,
; puts, printf). Exit code: fib(10) + strlen(banner) = 55 + 19 = 74.
@banner = private unnamed_addr constant [20 x i8] c"remote mcjit banner\00"
@fmt_fib = private unnamed_addr constant [12 x i8] c"fib(%d)=%d\0A\00"
@fmt_op = private unnamed_addr constant [17 x i8] c"op[%d](6, 3)=%d\0A\00"
@fmt_sum = private unnamed_addr constant [14 x i8] c"bss sum=%lld\0A\00"
@fmt_buf = private unnamed_addr constant [14 x i8] c"heap byte=%d\0A\00"
@table = global [3 x ptr] [ptr @add, ptr @sub, ptr @mul]
@squares = global [256 x i64] zeroinitializer

declare i32 @printf(ptr, ...)
declare i32 @puts(ptr)
declare ptr @malloc(i64)
declare ptr @memset(ptr, i32, i64)
declare i64 @strlen(ptr)
declare void @free(ptr)

define i32 @add(i32 %a, i32 %b) {
  %r = add i32 %a, %b
  ret i32 %r
}

define i32 @sub(i32 %a, i32 %b) {
  %r = sub i32 %a, %b
  ret i32 %r
}

define i32 @mul(i32 %a, i32 %b) {
  %r = mul i32 %a, %b
  ret i32 %r
}

define i32 @fib(i32 %n) {
entry:
  %small = icmp slt i32 %n, 2
  br i1 %small, label %base, label %rec

base:
  ret i32 %n

rec:
  %n1 = sub i32 %n, 1
  %n2 = sub i32 %n, 2
  %f1 = call i32 @fib(i32 %n1)
  %f2 = call i32 @fib(i32 %n2)
  %s = add i32 %f1, %f2
  ret i32 %s
}

define i32 @main() {
entry:
  call i32 @puts(ptr @banner)
  %f = call i32 @fib(i32 10)
  call i32 (ptr, ...) @printf(ptr @fmt_fib, i32 10, i32 %f)
  br label %ops

ops:
  %i = phi i32 [ 0, %entry ], [ %inext, %ops ]
  %idx = sext i32 %i to i64
  %slot = getelementptr [3 x ptr], ptr @table, i64 0, i64 %idx
  %fn = load ptr, ptr %slot
  %r = call i32 %fn(i32 6, i32 3)
  call i32 (ptr, ...) @printf(ptr @fmt_op, i32 %i, i32 %r)
  %inext = add i32 %i, 1
  %opsdone = icmp eq i32 %inext, 3
  br i1 %opsdone, label %fill, label %ops

fill:
  %j = phi i64 [ 0, %ops ], [ %jnext, %fill ]
  %sq = mul i64 %j, %j
  %p = getelementptr [256 x i64], ptr @squares, i64 0, i64 %j
  %old = load i64, ptr %p
  %new = add i64 %old, %sq
  store i64 %new, ptr %p
  %jnext = add i64 %j, 1
  %filldone = icmp eq i64 %jnext, 256
  br i1 %filldone, label %sum, label %fill

sum:
  %k = phi i64 [ 0, %fill ], [ %knext, %sum ]
  %acc = phi i64 [ 0, %fill ], [ %acc2, %sum ]
  %q = getelementptr [256 x i64], ptr @squares, i64 0, i64 %k
  %v = load i64, ptr %q
  %acc2 = add i64 %acc, %v
  %knext = add i64 %k, 1
  %sumdone = icmp eq i64 %knext, 256
  br i1 %sumdone, label %heap, label %sum

heap:
  call i32 (ptr, ...) @printf(ptr @fmt_sum, i64 %acc2)
  %buf = call ptr @malloc(i64 4096)
  call ptr @memset(ptr %buf, i32 90, i64 4096)
  %last = getelementptr i8, ptr %buf, i64 4095
  %byte = load i8, ptr %last
  %bytei = zext i8 %byte to i32
  call i32 (ptr, ...) @printf(ptr @fmt_buf, i32 %bytei)
  call void @free(ptr %buf)
  %len = call i64 @strlen(ptr @banner)
  %len32 = trunc i64 %len to i32
  %ret = add i32 %f, %len32
  ret i32 %ret
}
