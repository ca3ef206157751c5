import re,os,sys,itertools
root='src'
files=[os.path.join(d,f) for d,_,fs in os.walk(root) for f in fs if f.endswith('.rs') and '/bin/' not in d and '/tests' not in d and f not in ('own.rs','test_support.rs')]
def modpath(p):
    p=p[len('src/'):-3]
    parts=p.split('/')
    if parts[-1] in ('mod','lib'): parts=parts[:-1]
    return parts
def strip_tests(s):
    i=s.find('#[cfg(test)]\nmod tests')
    return s if i<0 else s[:i]
level=int(sys.argv[1]) if len(sys.argv)>1 else 1
edges={}
for f in files:
    mp=modpath(f)
    s=strip_tests(open(f).read())
    # remove comments
    s=re.sub(r'//.*','',s)
    src='::'.join(mp[:level]) if mp else 'lib'
    for m in re.finditer(r'crate::((?:[a-z_0-9]+::)*[a-z_0-9]+)',s):
        parts=m.group(1).split('::')
        # deepest prefix that is a module file
        k=len(parts)
        while k>0 and not (os.path.exists('src/'+'/'.join(parts[:k])+'.rs') or os.path.exists('src/'+'/'.join(parts[:k])+'/mod.rs')):
            k-=1
        parts=parts[:k]
        dst='::'.join(parts[:level])
        if dst and dst!=src and not src.startswith(dst+'::') and not dst.startswith(src+'::'):
            edges.setdefault(src,set()).add(dst)
    for m in re.finditer(r'\bsuper::((?:[a-z_0-9]+::)*[a-z_0-9]+)',s):
        base=mp[:-1]
        parts=base+m.group(1).split('::')
        k=len(parts)
        while k>0 and not (os.path.exists('src/'+'/'.join(parts[:k])+'.rs') or os.path.exists('src/'+'/'.join(parts[:k])+'/mod.rs')):
            k-=1
        parts=parts[:k]
        dst='::'.join(parts[:level])
        if dst and dst!=src and not src.startswith(dst+'::') and not dst.startswith(src+'::'): edges.setdefault(src,set()).add(dst)
# find cycles via tarjan
import sys
sys.setrecursionlimit(10000)
idx={};low={};st=[];on=set();res=[];c=[0]
nodes=set(edges)|{d for v in edges.values() for d in v}
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: res.append(comp)
for v in nodes:
    if v not in idx: sc(v)
for comp in res:
    print('CYCLE:',comp)
    for a in comp:
        print('  ',a,'->',sorted(x for x in edges.get(a,()) if x in comp))
if '-v' in sys.argv:
    for a in sorted(edges): print(a,'->',sorted(edges[a]))
