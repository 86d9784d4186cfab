; Opaque-pointer IR (LLVM 15+ only: lli 19 and 22): a global function-pointer table called
; indirectly, printf; returns the sum of the table's results (12).
@.fmt = private unnamed_addr constant [15 x i8] c"opaque ptr %d\0A\00"
@table = global [3 x ptr] [ptr @three, ptr @four, ptr @five]

declare i32 @printf(ptr, ...)

define internal i32 @three() {
  ret i32 3
}

define internal i32 @four() {
  ret i32 4
}

define internal i32 @five() {
  ret i32 5
}

define i32 @main() {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %acc = phi i32 [ 0, %entry ], [ %acc1, %loop ]
  %slot = getelementptr [3 x ptr], ptr @table, i64 0, i64 %i
  %fn = load ptr, ptr %slot
  %v = call i32 %fn()
  %acc1 = add i32 %acc, %v
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, 3
  br i1 %done, label %out, label %loop
out:
  %r = call i32 (ptr, ...) @printf(ptr @.fmt, i32 %acc1)
  ret i32 %acc1
}
