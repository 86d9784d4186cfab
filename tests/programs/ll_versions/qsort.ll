; libc calls back into JIT'd code: qsort with a JIT'd comparator over a malloc'd array,
; strlen on a constant string; prints the sorted numbers and returns the median + strlen (52).
@.fmt = private unnamed_addr constant [4 x i8] c"%d \00"
@.nl = private unnamed_addr constant [2 x i8] c"\0A\00"
@.word = private unnamed_addr constant [8 x i8] c"qsorted\00"
@init = private unnamed_addr constant [9 x i32] [i32 90, i32 -3, i32 45, i32 7, i32 12, i32 45, i32 0, i32 100, i32 64]

declare i32 @printf(i8*, ...)
declare i8* @malloc(i64)
declare void @free(i8*)
declare i64 @strlen(i8*)
declare void @qsort(i8*, i64, i64, i32 (i8*, i8*)*)
declare void @llvm.memcpy.p0i8.p0i8.i64(i8*, i8*, i64, i1)

define internal i32 @cmp(i8* %a, i8* %b) {
  %pa = bitcast i8* %a to i32*
  %pb = bitcast i8* %b to i32*
  %x = load i32, i32* %pa
  %y = load i32, i32* %pb
  %lt = icmp slt i32 %x, %y
  %gt = icmp sgt i32 %x, %y
  %l = zext i1 %lt to i32
  %g = zext i1 %gt to i32
  %r = sub i32 %g, %l
  ret i32 %r
}

define i32 @main() {
entry:
  %buf = call i8* @malloc(i64 36)
  %src = bitcast [9 x i32]* @init to i8*
  call void @llvm.memcpy.p0i8.p0i8.i64(i8* %buf, i8* %src, i64 36, i1 false)
  call void @qsort(i8* %buf, i64 9, i64 4, i32 (i8*, i8*)* @cmp)
  %arr = bitcast i8* %buf to i32*
  %fmt = getelementptr [4 x i8], [4 x i8]* @.fmt, i64 0, i64 0
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %p = getelementptr i32, i32* %arr, i64 %i
  %v = load i32, i32* %p
  %pr = call i32 (i8*, ...) @printf(i8* %fmt, i32 %v)
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, 9
  br i1 %done, label %out, label %loop
out:
  %nl = getelementptr [2 x i8], [2 x i8]* @.nl, i64 0, i64 0
  %pn = call i32 (i8*, ...) @printf(i8* %nl)
  %mp = getelementptr i32, i32* %arr, i64 4
  %med = load i32, i32* %mp
  call void @free(i8* %buf)
  %w = getelementptr [8 x i8], [8 x i8]* @.word, i64 0, i64 0
  %len = call i64 @strlen(i8* %w)
  %len32 = trunc i64 %len to i32
  %rc = add i32 %med, %len32
  ret i32 %rc
}
