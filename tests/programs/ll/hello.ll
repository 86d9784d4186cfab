; lli --jit-kind=mcjit --remote-mcjit: printf from the executor process, a global updated in
; a loop, and main's return value as lli's exit code (7).
@fmt = private unnamed_addr constant [15 x i8] c"hello lli %d!\0A\00"
@counter = global i32 0

declare i32 @printf(ptr, ...)

define i32 @main(i32 %argc, ptr %argv) {
entry:
  br label %loop

loop:
  %i = phi i32 [ 0, %entry ], [ %next, %loop ]
  %c = load i32, ptr @counter
  %c2 = add i32 %c, %i
  store i32 %c2, ptr @counter
  %next = add i32 %i, 1
  %done = icmp eq i32 %next, 5
  br i1 %done, label %exit, label %loop

exit:
  %v = load i32, ptr @counter
  call i32 (ptr, ...) @printf(ptr @fmt, i32 %v)
  ret i32 7
}
