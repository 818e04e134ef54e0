package Test::LLM::Examples;

# The files of conf.examples/ run as they are (t/074, t/099): only their
# lines marked "# run: NAME" change (paths, ports, the backend).

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET ();
use Test::LLM::Keys ();
use Test::LLM::Nginx ();
use Time::HiRes ();

our @EXPORT = qw(start_example);


# start_example(NAME, run-name => line, ...): conf.examples/NAME rendered
# into the server root (the "# run:" lines given replaced too) and
# started as an nginx of its own; returns (port, stop sub, dir)
sub start_example {
    my ($name, %run) = @_;

    my $c   = Test::LLM::Nginx::harness_config();
    my $dir = Test::LLM::Nginx::servroot() . "/example";
    mkdir $dir;
    mkdir "$dir/$_" for qw(logs conf tmp);

    my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                     Listen => 1) or die "port: $!";
    my $port = $sock->sockport;
    close $sock;

    # the key file: carol alone (no tier: the location's default)
    my ($line) = grep { / carol$/ } do {
        open my $k, '<', $Test::LLM::Keys::KEY_FILE or die $!; <$k> };
    open my $kf, '>', "$dir/keys.txt" or die $!;
    print $kf $line;
    close $kf;

    my %lines = (
        pid         => "pid $dir/nginx.pid;",
        error_log   => "error_log $dir/logs/error.log info;",
        load_module => "load_module $c->{module};",
        access_log  => "access_log $dir/logs/access.log llm;",
        key_file    => "llm_key_file $dir/keys.txt;",
        listen      => "listen 127.0.0.1:$port;",
        backend     => "server 127.0.0.1:$ENV{TEST_NGINX_MOCK_PORT};",
        %run,
    );

    open my $in, '<', "conf.examples/$name" or die "$name: $!";
    my $conf = '';
    while (my $l = <$in>) {
        if ($l =~ /^(\s*).*#\s*run:\s*(\S+)\s*$/) {
            my ($indent, $k) = ($1, $2);
            $l = exists $lines{$k} ? "$indent$lines{$k}\n" : $l;
        }
        $conf .= $l;
    }
    $conf = ($> == 0 ? "user root root;\n" : '') . $conf;

    open my $out, '>', "$dir/conf/nginx.conf" or die $!;
    print $out $conf;
    close $out;

    my $t = `$c->{nginx} -p $dir/ -c conf/nginx.conf -t 2>&1`;
    die "nginx -t on conf.examples/$name:\n$t" if $?;

    system($c->{nginx}, '-p', "$dir/", '-c', 'conf/nginx.conf') == 0
        or die "cannot start conf.examples/$name";

    for (1 .. 50) {
        last if IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        Time::HiRes::sleep(0.1);
    }

    my $stop = sub {
        open my $p, '<', "$dir/nginx.pid" or return;
        my $pid = <$p>;
        chomp $pid;
        kill 'QUIT', $pid;
        for (1 .. 50) { last unless kill 0, $pid; Time::HiRes::sleep(0.1) }
    };

    return ($port, $stop, $dir);
}


1;
