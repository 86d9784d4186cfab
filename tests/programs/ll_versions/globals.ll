; Mutable globals (a zero-initialized table and an initialized counter), a loop and a helper
; function: fills squares[i] = i*i for i < 10, prints their sum (285) and returns sum % 256 (29).
@squares = global [10 x i32] zeroinitializer
@calls = global i32 100
@.fmt = private unnamed_addr constant [20 x i8] c"sum=%d calls=%d %s\0A\00"
@.tag = private unnamed_addr constant [3 x i8] c"ok\00"

declare i32 @printf(i8*, ...)

define internal i32 @square(i32 %x) {
  %c = load i32, i32* @calls
  %c1 = add i32 %c, 1
  store i32 %c1, i32* @calls
  %r = mul i32 %x, %x
  ret i32 %r
}

define i32 @main() {
entry:
  br label %fill
fill:
  %i = phi i32 [ 0, %entry ], [ %i1, %fill ]
  %sq = call i32 @square(i32 %i)
  %idx = sext i32 %i to i64
  %p = getelementptr [10 x i32], [10 x i32]* @squares, i64 0, i64 %idx
  store i32 %sq, i32* %p
  %i1 = add i32 %i, 1
  %done = icmp eq i32 %i1, 10
  br i1 %done, label %sum, label %fill
sum:
  %j = phi i32 [ 0, %fill ], [ %j1, %sum ]
  %acc = phi i32 [ 0, %fill ], [ %acc1, %sum ]
  %jdx = sext i32 %j to i64
  %q = getelementptr [10 x i32], [10 x i32]* @squares, i64 0, i64 %jdx
  %v = load i32, i32* %q
  %acc1 = add i32 %acc, %v
  %j1 = add i32 %j, 1
  %done2 = icmp eq i32 %j1, 10
  br i1 %done2, label %out, label %sum
out:
  %calls = load i32, i32* @calls
  %fmt = getelementptr [20 x i8], [20 x i8]* @.fmt, i64 0, i64 0
  %tag = getelementptr [3 x i8], [3 x i8]* @.tag, i64 0, i64 0
  %pr = call i32 (i8*, ...) @printf(i8* %fmt, i32 %acc1, i32 %calls, i8* %tag)
  %rc = urem i32 %acc1, 256
  ret i32 %rc
}
