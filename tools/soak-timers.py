# gdb -p WORKER -batch -x tools/soak-timers.py: prints "timers N", the
# nodes of ngx_event_timer_rbtree (layout of ngx_rbtree_t/_node_t on
# 64-bit: root, sentinel; key, left, right), without debug symbols.
import gdb
inf = gdb.selected_inferior()
def ptr(a):
    return int.from_bytes(bytes(inf.read_memory(a, 8)), 'little')
t = int(gdb.parse_and_eval('(long) &ngx_event_timer_rbtree'))
root, sent = ptr(t), ptr(t + 8)
n, stack = 0, [root]
while stack:
    x = stack.pop()
    if x == sent or x == 0:
        continue
    n += 1
    stack.append(ptr(x + 8))
    stack.append(ptr(x + 16))
print("timers %d" % n)
