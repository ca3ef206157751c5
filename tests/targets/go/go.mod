module timeskew/probe

go 1.19
